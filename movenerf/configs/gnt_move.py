r"""GNT-MoVE experiment configs: GNT with a mixture of view experts.

Each variant is ``gnt.py``'s of the same name with ``model.moe`` filled in
from ``MoEConfig``'s defaults (``movenerf/moe/config.py``, the paper's MoE settings: the
FFN of the odd view-transformer blocks is a sparse MoE of 4 experts with top-2 routing and
a permanent expert, capacity factor 1.25 in training and evaluation). Training adds the
diversity (load-balancing) regulariser and the geometry-aware consistency loss between
nearby rays (a quarter of each example's rays come in pairs at most 2 pixels apart). The
weights 0.01 and 0.1 are this library's choice (the usual MoE balancing coefficient, and
a consistency term an order of magnitude below the photometric loss at convergence); the
paper does not state them.

Variants (``--config experiments/gnt_move.py:VARIANT`` in a checkout, ``--config
gnt_move:VARIANT`` anywhere after ``pip install``; override any key with
``--config.key=value``; unknown keys are errors):

  tiny       The main job (the README's first command): trains on generated scenes for a
             few minutes on a CPU, then evaluates zero-shot on unseen generated scenes:
               python -m movenerf.train --config experiments/gnt_move.py:tiny --workdir runs/demo
             It writes renders, depth and expert maps, a video and a metrics table under
             the workdir. Expected: PSNR 17.79 / SSIM 0.710 on the unseen scenes (4
             held-out views of 2 scenes), against 16.27 / 0.581 for copying the nearest
             source view and 11.94 / 0.203 after 20 steps (``--config.train.num_steps=20``).
  reference  The reference configuration with MoVE:
               python -m movenerf.train --config experiments/gnt_move.py:reference \
                   --workdir runs/move_ref
             Expected: no measured figure yet.
  paper      The published GNT-MoVE setup, for GPUs / TPU pods; e.g. started from dense
             GNT weights (every expert a copy of the dense FFN):
               python -m movenerf.train --config experiments/gnt_move.py:paper --workdir runs/move \
                   --config.init_from=runs/gnt --config.upcycle=true
             Expected: the GNT-MoVE paper's zero-shot figures; not reproduced here (no
             measured figure yet).
  fewshot    Fine-tunes a trained GNT-MoVE run on one scene, as ``gnt.py:fewshot``:
               python -m movenerf.train --config experiments/gnt_move.py:fewshot \
                   --workdir runs/move_ft --config.init_from=runs/demo
             Expected: no measured figure yet.
  real       The tiny GNT-MoVE on real captures, as ``gnt.py:real``: trains on the real
             pack's LLFF fern, DTU scan 24 and Blender lego, evaluates zero-shot on LLFF
             flower, DTU scan 37 and Blender mic:
               python -m movenerf.train --config experiments/gnt_move.py:real \
                   --workdir runs/move_real
             Expected: no measured figure yet.
"""

import ml_collections

from movenerf.configs import base
from movenerf.configs import gnt
from movenerf.moe.config import MoEConfig

VARIANTS = gnt.VARIANTS


def get_config(variant: str = "reference") -> ml_collections.ConfigDict:
  """GNT config of the same variant with ``model.moe`` filled in (locked).

  Raises:
    ValueError: an unknown variant.
  """
  c = gnt.get_config(variant)
  c.unlock()
  # The experts replace the FFN of the odd blocks of the variant's depth.
  c.model.moe = base.from_dataclass(MoEConfig, layers=tuple(range(1, c.model.depth, 2)))
  c.loss.update(diversity_weight=0.01, consistency_weight=0.1)
  c.data.example.pair_fraction = 0.25
  c.lock()
  return c
