-- The seed's story: beef and spice are received, mixed into MIX-BATCH-88, formed into
-- FG-DONER-X1. Every statement is idempotent: loading twice changes nothing.
INSERT INTO users (username, display_name, role, password_hash, disabled)
VALUES ('system', 'flowviz system (seed data; cannot log in)', 'admin', '!', true)
ON CONFLICT (username) DO NOTHING;

INSERT INTO streams (code, name, description)
VALUES ('DONER', 'Doner line', 'Beef doner kebab: receiving to packing')
ON CONFLICT (code) DO NOTHING;

INSERT INTO phases (stream_id, code, name, seq)
SELECT s.id, p.code, p.name, p.seq
FROM streams s, (VALUES ('RECEIVING', 'Receiving', 1), ('MIXING', 'Mixing', 2), ('FORMING', 'Forming', 3),
                        ('FREEZING', 'Freezing', 4), ('PACKING', 'Packing', 5)) AS p (code, name, seq)
WHERE s.code = 'DONER'
ON CONFLICT (stream_id, code) DO NOTHING;

INSERT INTO qc_gates (code, name, phase_id, description)
SELECT 'QG-RECEIVING', 'Incoming goods inspection', ph.id, 'Temperature, certificate of analysis, visual check'
FROM phases ph JOIN streams s ON s.id = ph.stream_id
WHERE s.code = 'DONER' AND ph.code = 'RECEIVING'
ON CONFLICT (code) DO NOTHING;

INSERT INTO lots (lot_code, kind, product, quantity, uom, stream_id, produced_at)
SELECT v.lot_code, v.kind, v.product, v.quantity, 'kg', s.id, v.produced_at::timestamptz
FROM streams s, (VALUES
    ('RAW-BEEF-001', 'RAW', 'Beef trim 80/20', 500.000, '2026-01-15T06:00:00Z'),
    ('RAW-SPICE-001', 'RAW', 'Doner spice blend', 25.000, '2026-01-15T06:30:00Z'),
    ('MIX-BATCH-88', 'MIX', 'Doner meat mix', 400.000, '2026-01-16T08:00:00Z'),
    ('FG-DONER-X1', 'FG', 'Doner kebab cone 10 kg', 400.000, '2026-01-16T11:00:00Z')
) AS v (lot_code, kind, product, quantity, produced_at)
WHERE s.code = 'DONER'
ON CONFLICT (lot_code) DO NOTHING;

INSERT INTO production_runs (run_code, stream_id, phase_id, operator, started_at, ended_at)
SELECT v.run_code, s.id, ph.id, 'seed', v.started_at::timestamptz, v.ended_at::timestamptz
FROM streams s JOIN phases ph ON ph.stream_id = s.id
JOIN (VALUES ('RUN-MIX-88', 'MIXING', '2026-01-16T07:00:00Z', '2026-01-16T08:00:00Z'),
             ('RUN-FORM-X1', 'FORMING', '2026-01-16T09:00:00Z', '2026-01-16T11:00:00Z'))
     AS v (run_code, phase, started_at, ended_at) ON v.phase = ph.code
WHERE s.code = 'DONER'
ON CONFLICT (run_code) DO NOTHING;

INSERT INTO lot_genealogy (parent_lot_id, child_lot_id, quantity, uom, run_id)
SELECT p.id, c.id, v.quantity, 'kg', r.id
FROM (VALUES ('RAW-BEEF-001', 'MIX-BATCH-88', 380.000, 'RUN-MIX-88'),
             ('RAW-SPICE-001', 'MIX-BATCH-88', 20.000, 'RUN-MIX-88'),
             ('MIX-BATCH-88', 'FG-DONER-X1', 400.000, 'RUN-FORM-X1')) AS v (parent, child, quantity, run_code)
JOIN lots p ON p.lot_code = v.parent
JOIN lots c ON c.lot_code = v.child
JOIN production_runs r ON r.run_code = v.run_code
ON CONFLICT DO NOTHING;

INSERT INTO qc_decisions (lot_id, gate_id, decision, reason, decided_by, decided_at)
SELECT l.id, g.id, 'pass', 'Incoming inspection passed', u.id, '2026-01-15T07:00:00Z'
FROM lots l, qc_gates g, users u
WHERE l.lot_code IN ('RAW-BEEF-001', 'RAW-SPICE-001') AND g.code = 'QG-RECEIVING' AND u.username = 'system'
  AND NOT EXISTS (SELECT 1 FROM qc_decisions d WHERE d.lot_id = l.id);

INSERT INTO scenarios (name, root_lot_id, created_by, created_at, duration_ms, snapshot)
SELECT 'Seed drill: RAW-SPICE-001', l.id, u.id, '2026-01-17T09:00:00Z', 0,
       '{"root": "RAW-SPICE-001", "downstream": ["MIX-BATCH-88", "FG-DONER-X1"], "note": "seed example"}'::jsonb
FROM lots l, users u
WHERE l.lot_code = 'RAW-SPICE-001' AND u.username = 'system'
  AND NOT EXISTS (SELECT 1 FROM scenarios WHERE name = 'Seed drill: RAW-SPICE-001');
