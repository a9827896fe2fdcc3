"""The ``toy`` simulation scenario: the replicated register under chaos.

A cluster of ``nodes`` register nodes (``n1``, ``n2``, ...) and ``clients``
client nodes (``c1``, ...) runs the standard chaos-then-heal schedule. Clients
never crash (their histories are the evidence); servers do. The checks:

* durability, at every restart: every write that node acknowledged to a client
  (as far as the clients have heard) is in the state it rebuilt from its own disk,
  or superseded there by a newer version of the key -- checked right after
  ``start``, before anti-entropy could hide a loss;
* storage (by the simulator, at every restart): the recovered log is a prefix of
  what was appended and holds every fsynced record;
* convergence, at the end: every server holds the same map, and that map covers
  every acknowledged write;
* liveness guard: some write was acknowledged (a run where nothing happened
  proves nothing).

Options (``-o key=value``): ``nodes`` (3), ``clients`` (2), ``keys`` (6),
``chaos_ms`` and ``heal_ms`` (the ``SimConfig`` defaults), ``op_interval_ms``
(8), ``value_bytes`` (0: values are not padded), and any ``sim.<SimConfig
field>``.
"""

from __future__ import annotations

from synod.core.ids import NodeId
from synod.sim import (
    ScenarioOptions,
    ScenarioResult,
    SimConfig,
    Simulation,
    Violation,
    register_scenario,
    result_from_simulation,
)
from synod.toy.messages import Entry
from synod.toy.register import RegisterNode, register_factory
from synod.toy.workload import ClientConfig, ClientFactory, RegisterClient


def _clients(simulation: Simulation, names: list[str]) -> list[RegisterClient]:
    clients = []
    for name in names:
        core = simulation.core(name)
        assert isinstance(core, RegisterClient)
        clients.append(core)
    return clients


def _covers(state: dict[str, Entry], entry: Entry) -> bool:
    held = state.get(entry.key)
    return held is not None and held.order() >= entry.order()


def toy_scenario(seed: int, options: ScenarioOptions) -> ScenarioResult:
    """The replicated register under crashes, partitions and loss; checks durability and convergence."""
    node_count = options.get_int("nodes", 3)
    client_count = options.get_int("clients", 2)
    base = SimConfig(crashed_nodes_max=max(1, node_count // 2))
    base = base.replace(
        chaos_ms=options.get_float("chaos_ms", base.chaos_ms),
        heal_ms=options.get_float("heal_ms", base.heal_ms),
    )
    config = options.sim_config(base)
    servers = tuple(NodeId(f"n{i}") for i in range(1, node_count + 1))
    client_names = [f"c{i}" for i in range(1, client_count + 1)]
    # Clients go quiet a third of the way into healing, so the end state is final.
    client_config = ClientConfig(
        keys=options.get_int("keys", 6),
        op_interval_ms=options.get_float("op_interval_ms", 8.0),
        value_bytes=options.get_int("value_bytes", 0),
        stop_ms=config.chaos_ms + config.heal_ms / 3,
    )
    simulation = Simulation(seed, config, trace_sink=options.trace_sink)
    factory = register_factory(servers)
    for server in servers:
        simulation.add_node(server, factory)
    for name in client_names:
        simulation.add_node(name, ClientFactory(servers=servers, config=client_config), fault_prone=False)

    def check_durability(node: str, core: object) -> None:
        if not isinstance(core, RegisterNode) or not client_names or not simulation.is_up(client_names[0]):
            return
        for client in _clients(simulation, client_names):
            for op in client.acknowledged_writes():
                assert op.entry is not None
                if op.node == node and not _covers(core.state, op.entry):
                    raise Violation(
                        f"durability: {node} acknowledged {op.entry} to {client.node} "
                        f"(request {op.request_id}) but restarted without it"
                    )

    simulation.on_start(check_durability)
    simulation.run_chaos_then_heal()

    violations: list[str] = []
    states = {server: _register(simulation, server).state for server in servers}
    reference = states[servers[0]]
    for server in servers[1:]:
        if states[server] != reference:
            differing = sorted(k for k in set(reference) | set(states[server]) if reference.get(k) != states[server].get(k))
            violations.append(f"convergence: {server} differs from {servers[0]} on keys {differing}")
    acknowledged = [op for client in _clients(simulation, client_names) for op in client.acknowledged_writes()]
    for op in acknowledged:
        assert op.entry is not None
        for server in servers:
            if not _covers(states[server], op.entry):
                violations.append(f"durability: acknowledged {op.entry} missing on {server} after healing")
                break
    if not acknowledged:
        violations.append("liveness: no write was acknowledged; the run proved nothing")
    histories = [op for client in _clients(simulation, client_names) for op in client.history]
    extra = {
        "operations": float(len(histories)),
        "writes_acknowledged": float(len(acknowledged)),
        "timeouts": float(sum(1 for op in histories if op.outcome.value == "timeout")),
    }
    return result_from_simulation("toy", seed, simulation, violations, extra)


def _register(simulation: Simulation, node: str) -> RegisterNode:
    core = simulation.core(node)
    assert isinstance(core, RegisterNode)
    return core


register_scenario("toy", toy_scenario)
