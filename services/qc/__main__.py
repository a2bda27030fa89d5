from flowviz.core.server import run
from services.qc.servicer import POLICY, register

if __name__ == "__main__":
    run("qc", register, POLICY)
