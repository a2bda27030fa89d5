from flowviz.core.server import run
from services.genealogy.servicer import register

if __name__ == "__main__":
    run("genealogy", register)
