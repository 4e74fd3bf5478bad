"""The README's Python examples run (with fewer steps), so that the documentation does not rot."""

import re
from pathlib import Path

README = Path(__file__).parent.parent / "README.md"


def test_readme_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 3
    for index, code in enumerate(blocks):
        # Fewer training steps and evaluation episodes than the README shows
        code = (
            code.replace("40_000", "300")
            .replace("10_000", "300")
            .replace("20_000", "200")
            .replace("eval_freq=5_000", "eval_freq=200")
            .replace("n_eval_episodes=5", "n_eval_episodes=1")
            .replace("eval_freq=5_000", "eval_freq=100")
            .replace("n_eval_episodes=10", "n_eval_episodes=1")
        )
        exec(compile("import gymnasium as gym\n" + code, f"README.md[{index}]", "exec"), {})
    for name in ("student", "student_16", "student_pd", "pendulum_sac"):
        assert (tmp_path / f"{name}.zip").exists(), name
    # "Deploying a student"
    for name in ("student", "pendulum_sac"):
        assert (tmp_path / f"{name}.onnx").exists(), name
