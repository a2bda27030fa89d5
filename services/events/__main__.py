from flowviz.core.server import run
from services.events.servicer import POLICY, register

if __name__ == "__main__":
    run("events", register, POLICY)
