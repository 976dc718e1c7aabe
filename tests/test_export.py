import subprocess
import sys

import torch

from stridelab.export import export_policy
from stridelab.models import ActorCritic


def test_exported_program_matches_in_process_deterministic_actions(tmp_path):
    torch.manual_seed(0)
    agent = ActorCritic(11, 3, action_low=[-0.4, -1.0, 0.0], action_high=[0.4, 1.0, 2.0])
    for p in agent.policy.parameters():
        torch.nn.init.normal_(p, std=0.3)
    agent.obs_rms.update(torch.randn(1000, 11) * 5 + 2)
    path = export_policy(agent, tmp_path / "policy.pt")
    obs = torch.randn(64, 11) * 6 + 2
    expected, _ = agent.act(obs, deterministic=True)
    # Loaded in a fresh interpreter that never imports stridelab.
    torch.save(obs, tmp_path / "obs.pt")
    code = (f"import torch; p = torch.jit.load({str(path)!r}); "
            f"torch.save(p(torch.load({str(tmp_path / 'obs.pt')!r})), {str(tmp_path / 'out.pt')!r})")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)
    actions = torch.load(tmp_path / "out.pt")
    assert actions.shape == (64, 3) and actions.dtype == torch.float32
    torch.testing.assert_close(actions, expected, rtol=1e-5, atol=1e-5)
    assert (actions[:, 0].abs() <= 0.4).all() and (actions[:, 2] >= 0).all()
