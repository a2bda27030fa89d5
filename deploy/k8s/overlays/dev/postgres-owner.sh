# Sourced by the postgres image's entrypoint once, when it creates the data folder (the dev
# overlay and docker compose): the role flowviz's migrations run as. It owns the database and is
# no superuser (CREATEROLE: migration 0011 creates the services' roles, the migrate job gives
# them passwords).
psql -v ON_ERROR_STOP=1 -v pw="$FLOWVIZ_OWNER_PASSWORD" --username "$POSTGRES_USER" --dbname postgres <<'SQL'
CREATE ROLE flowviz_owner LOGIN CREATEROLE PASSWORD :'pw';
CREATE DATABASE flowviz OWNER flowviz_owner;
SQL
