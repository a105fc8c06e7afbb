"""Real overlay cores over an in-memory network in virtual time."""

from modelmine.p2p.membership import Status
from modelmine.p2p.overlay import Verdict
from modelmine.signing import Signed
from modelmine.sim.overlay_net import OverlayNet


def _full_membership(net: OverlayNet) -> bool:
    n = len(net.nodes)
    return all(
        sum(1 for m in node.overlay.members if m.status is Status.ONLINE) >= n
        for node in net.nodes
        if node.alive
    )


def test_twenty_nodes_converge_to_full_membership_from_one_seed_peer() -> None:
    net = OverlayNet(20, seed=1)
    # Each node knows only node 0, as if node 0 were the only peer a bootstrap server returned.
    for node in net.nodes[1:]:
        net.seed_peers(node, [net.nodes[0]])
    assert net.run_until_true(lambda: _full_membership(net), deadline=30.0)
    assert net.now <= 15.0, f"took {net.now:.1f} virtual seconds"
    degrees = [node.overlay.statistics().links for node in net.nodes]
    assert max(degrees) <= 16
    assert min(degrees) >= 3


def test_broadcast_reaches_every_node_once() -> None:
    net = OverlayNet(20, seed=2)
    for node in net.nodes[1:]:
        net.seed_peers(node, [net.nodes[0]])
    net.run_until(30.0)
    origin = net.nodes[7]
    for node in net.nodes:
        node.overlay.register_topic("news", _accept)
    statement = net.keys.sign(origin.node_id, "news", {"text": "hello"})
    net.publish(origin, "news", statement)
    net.run_until(32.0)
    for node in net.nodes:
        got = [d for d in node.delivered if d.topic == "news"]
        assert len(got) == 1, f"node {node.index} got {len(got)} copies delivered"


def _accept(statement: Signed, now: float) -> Verdict:
    return Verdict.ACCEPT


def test_crashed_node_goes_suspect_then_offline_and_same_seed_reproduces() -> None:
    def run(seed: int) -> tuple[float, float]:
        net = OverlayNet(10, seed=seed)
        for node in net.nodes[1:]:
            net.seed_peers(node, [net.nodes[0]])
        net.run_until(20.0)
        victim = net.nodes[3]
        net.crash(victim)
        crashed_at = net.now
        others = [n for n in net.nodes if n is not victim]

        def seen(status: Status) -> bool:
            return all(
                (m := n.overlay.members.get(victim.node_id)) is not None and m.status is status
                for n in others
            )

        assert net.run_until_true(lambda: seen(Status.SUSPECT) or seen(Status.OFFLINE), 60.0)
        suspect = net.now - crashed_at
        assert net.run_until_true(lambda: seen(Status.OFFLINE), 80.0)
        return suspect, net.now - crashed_at

    first = run(5)
    assert first[1] <= 31.0
    assert run(5) == first


def test_a_hundred_nodes_join_through_one_seed_peer_by_push_pull() -> None:
    net = OverlayNet(100, seed=4)
    for node in net.nodes[1:]:
        net.seed_peers(node, [net.nodes[0]])
    assert net.run_until_true(lambda: _full_membership(net), deadline=45.0, step=0.5)
    assert max(node.overlay.statistics().links for node in net.nodes) <= 16
