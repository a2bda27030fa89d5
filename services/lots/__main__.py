from flowviz.core.server import run
from services.lots.servicer import POLICY, PUBLIC, register

if __name__ == "__main__":
    run("lots", register, POLICY, PUBLIC)
