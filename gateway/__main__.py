"""`python -m gateway`: the REST gateway."""

from gateway.app import main

main()
