"""The cluster: replica engines, routers, and the SimPy simulation that wires them."""
