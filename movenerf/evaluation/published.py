"""Published cross-scene (zero-shot) figures of GNT, GNT-MoVE and IBRNet, per protocol.

Every number here was read in the source its entry names; none is derived or recalled.
The papers' own tables were not among the sources that could be read, so every figure is
quoted second hand (a benchmark aggregator, or a GitHub issue quoting the paper), and
each ``source`` says which. A figure no source gave is absent (``None`` in ``mean``, or
the method missing from ``methods``) and ``not_found`` says what is missing.

``PUBLISHED[protocol]``::

  {"methods": {name: {"mean": {"psnr", "ssim", "lpips"},   # None: not found
                      "scenes": {scene: {"psnr", "ssim", "lpips"}},   # per scene, if found
                      "lpips_net": "alex" | "vgg" | None,
                      "lpips_net_source": str,
                      "source": str}},
   "not_found": [str, ...]}

``SOURCES`` lists every source that was read (with what it gave), including those that
were read and not used.
"""

from __future__ import annotations

PROTOCOLS = ("llff", "nerf_synthetic", "dtu", "shiny")

_GNT_LPIPS = ("VGG: the official evaluation code computes LPIPS with utils.lpips(), whose "
              "default net is 'vgg' (github.com/VITA-Group/GNT eval.py line 217, utils.py "
              "line 290, commit 53e0fc3d39b4244503d6c4de1e34bbf3199dd2a8); the papers' "
              "text was not read")
_MOVE_LPIPS = ("VGG: the official evaluation code computes LPIPS with utils.lpips(), whose "
               "default net is 'vgg' (github.com/VITA-Group/GNT-MOVE eval.py line 217, "
               "utils.py line 290, commit 3817bfcda0ad726b37165867a1c5703bb6be0b8d); the "
               "paper's text was not read")
_MOVE_SOURCE = ("Cong et al., ICCV 2023 (GNT-MoVE), zero-shot results, as listed by the "
                "benchmark aggregator https://www.wizwand.com/paper/68fa70651e209131cea4ae48 "
                "(PSNR only); the same PSNR is quoted in a third-party preprint (DRAE, "
                "'Table 22/23'). The paper's table itself was not read")



def _move_psnr(psnr: float) -> dict:
  """A GNT-MoVE entry of which only the mean PSNR was found."""
  return {"mean": {"psnr": psnr, "ssim": None, "lpips": None}, "scenes": {},
          "lpips_net": "vgg", "lpips_net_source": _MOVE_LPIPS, "source": _MOVE_SOURCE}


PUBLISHED: dict = {
    "llff": {
        "methods": {
            "GNT": {
                "mean": {"psnr": 25.86, "ssim": 0.867, "lpips": 0.116},
                "scenes": {},
                "lpips_net": "vgg",
                "lpips_net_source": _GNT_LPIPS,
                "source": ("Varma T et al., ICLR 2023 (GNT), cross-scene generalization on "
                           "LLFF, as listed by "
                           "https://paperswithcode.com/paper/is-attention-all-nerf-needs "
                           "and quoted as 'llff-paper' in "
                           "https://github.com/VITA-Group/GNT/issues/23 (PSNR also in "
                           "issue #19); the paper's table itself was not read"),
            },
            "GNT-MoVE": _move_psnr(26.02),
        },
        "not_found": [
            "IBRNet: not found in sources checked",
            "GNT, GNT-MoVE: per-scene figures not found in sources checked",
            "GNT-MoVE: SSIM and LPIPS not found in a source that could be confirmed",
        ],
    },
    "nerf_synthetic": {
        "methods": {
            "GNT": {
                "mean": {"psnr": 27.29, "ssim": 0.937, "lpips": 0.056},
                "scenes": {},
                "lpips_net": "vgg",
                "lpips_net_source": _GNT_LPIPS,
                "source": ("Varma T et al., ICLR 2023 (GNT), cross-scene generalization on "
                           "NeRF Synthetic (Blender), quoted as 'blender-paper' in "
                           "https://github.com/VITA-Group/GNT/issues/23 (PSNR also in "
                           "issue #19); the paper's table itself was not read"),
            },
            "GNT-MoVE": _move_psnr(27.47),
        },
        "not_found": [
            "IBRNet: not found in sources checked",
            "GNT, GNT-MoVE: per-scene figures not found in sources checked",
            "GNT-MoVE: SSIM and LPIPS not found in a source that could be confirmed",
        ],
    },
    "shiny": {
        "methods": {
            "GNT-MoVE": {
                "mean": {"psnr": 27.54, "ssim": None, "lpips": None},
                "scenes": {},
                "lpips_net": "vgg",
                "lpips_net_source": _MOVE_LPIPS,
                "source": _MOVE_SOURCE + " (listed there as 'Shiny-6 (test)')",
            },
        },
        "not_found": [
            "GNT: not found in sources checked",
            "IBRNet: not found in sources checked",
            "GNT-MoVE: SSIM, LPIPS and per-scene figures not found in a source that could "
            "be confirmed",
        ],
    },
    "dtu": {
        "methods": {},
        "not_found": [
            "GNT: not found in sources checked",
            "GNT-MoVE: not found in sources checked",
            "IBRNet: not found in sources checked",
        ],
    },
}

SOURCES = (
    "https://paperswithcode.com/paper/is-attention-all-nerf-needs (stored copy): GNT, "
    "Generalizable Novel View Synthesis on LLFF: PSNR 25.86, SSIM 0.867, LPIPS 0.116",
    "https://github.com/VITA-Group/GNT/issues/23: 'llff-paper 25.86 / 0.867 / 0.116', "
    "'blender-paper 27.29 / 0.937 / 0.056' (a user quoting the paper)",
    "https://github.com/VITA-Group/GNT/issues/19: 'PSNR of Nerf synthetic in paper: 27.29', "
    "'PSNR of llff in paper: 25.86'",
    "https://www.wizwand.com/paper/68fa70651e209131cea4ae48 (stored copy): GNT-MoVE, LLFF "
    "PSNR 26.02, NeRF Synthetic PSNR 27.47, Shiny-6 (test) PSNR 27.54",
    "github.com/VITA-Group/GNT and VITA-Group/GNT-MOVE (README.md, eval.py, utils.py): the "
    "READMEs hold no figures; the evaluation code's LPIPS is VGG",
    "A third-party preprint text in the GitHub file index (DRAE, 'Dynamic Retrieval-"
    "Augmented Expert Networks', appendix F.4, Tables 14, 15, 22, 23) quoting GNT, "
    "GNT-MOVE and IBRNet zero-shot figures: used only to corroborate the PSNR above; its "
    "other figures (SSIM / LPIPS of GNT-MoVE, GNT on Shiny, IBRNet) are not recorded, "
    "as no second source confirmed them and its own tables disagree with each other",
)


def lookup(protocol: str) -> dict:
  """The entry of ``protocol`` (``{"methods": {}, "not_found": [...]}`` when unknown)."""
  return PUBLISHED.get(protocol, {"methods": {}, "not_found": []})
