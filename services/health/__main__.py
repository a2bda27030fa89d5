from flowviz.core.server import run
from services.health.servicer import PUBLIC, register

if __name__ == "__main__":
    run("health", register, {}, PUBLIC)
