from flowviz.core.server import run
from services.lots.servicer import register

if __name__ == "__main__":
    run("lots", register)
