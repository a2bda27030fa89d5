from flowviz.core.server import run
from services.qc.servicer import register

if __name__ == "__main__":
    run("qc", register)
