"""--init-decay: the transferred point keeps the source's share of its init, c theta2^0 + pi(theta1^t - c theta1^0)."""

import torch

from raytraj.perm import identity_permutation, random_permutation
from raytraj.transfer import TransferConfig, prepare
from raytraj.transfer.run import local_worker
from raytraj.transfer.worker import init_share


def test_init_share_is_the_projection_on_the_init():
    init = torch.randn(50, 20)
    assert abs(init_share(0.3 * init, init) - 0.3) < 1e-6
    orthogonal = torch.randn(50, 20)
    orthogonal -= (orthogonal * init).sum() / (init * init).sum() * init
    assert abs(init_share(0.6 * init + orthogonal, init) - 0.6) < 1e-6
    assert init_share(torch.ones(5), torch.zeros(5)) == 1.0  # a zero-initialised bias keeps the paper's rule
    assert init_share(-init, init) == 0.0 and init_share(3 * init, init) == 1.0  # clipped to [0, 1]


def test_target_point_with_and_without_init_decay(digits_source):
    src = str(digits_source / "source")
    cfg = TransferConfig(steps=4, init_decay=True)
    problem = prepare(src, cfg, target_seed=5)
    decayed, plain = local_worker(problem, cfg), local_worker(problem, TransferConfig(steps=4))
    ident = identity_permutation(problem.spec)
    start, end = problem.trajectory.point(0), problem.trajectory.point(4)
    got, paper = decayed.target_point(ident, 4), plain.target_point(ident, 4)
    for name in problem.param_names:
        c = init_share(end[name], start[name])
        torch.testing.assert_close(got[name], c * problem.target_init[name] + end[name] - c * start[name])
        torch.testing.assert_close(paper[name], problem.target_init[name] + end[name] - start[name])
    assert not all(torch.equal(got[n], paper[n]) for n in problem.param_names)


def test_planted_init_is_still_reproduced_with_init_decay(digits_source):
    # Onto a permuted copy of the source's init, c pi(theta1^0) + pi(theta1^t - c theta1^0) = pi(theta1^t).
    src = str(digits_source / "source")
    cfg = TransferConfig(steps=3, init_decay=True)
    problem = prepare(src, cfg, target_seed=5)
    star = random_permutation(problem.spec, torch.Generator().manual_seed(3))
    from raytraj.perm import apply_permutation

    problem.target_init = apply_permutation(problem.spec, star, problem.trajectory.point(0))
    point = local_worker(problem, cfg).target_point(star, 3)
    expected = apply_permutation(problem.spec, star, problem.trajectory.point(3))
    for name in problem.param_names:
        torch.testing.assert_close(point[name], expected[name], rtol=1e-5, atol=1e-6)
