from flowviz.core.server import run
from services.genealogy.servicer import POLICY, register

if __name__ == "__main__":
    run("genealogy", register, POLICY)
