"""torchrun entry for tests/test_training.py: the same training call on 1 or N processes."""

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from test_training import data, fake_tokens, fresh, spec  # noqa: E402

from compodiff.training import distributed, train_denoiser  # noqa: E402

if __name__ == "__main__":
    out = Path(sys.argv[1])
    torch.set_num_threads(1)
    rank, _ = distributed()
    pairs, trip = data()
    model = fresh()
    summary = train_denoiser(model, spec(steps=5, batch_size=12, checkpoint_every=100), pairs, trip, fake_tokens,
                             out / "state")
    if rank == 0:
        torch.save(model.state_dict(), out / "weights.pt")
        summary.pop("ema")
        (out / "summary.json").write_text(json.dumps(summary))
