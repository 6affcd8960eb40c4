"""Ego-Exo pre-training pipeline: CLI, stages, signals-store I/O and inspection."""
import os

# libgomp's default spin-waiting makes torch's CPU threads fight any other busy process
# (Ray actors, DataLoader decoders, a second job): under load one measured ego-teacher step
# went from 0.13 s to 2.3 s on 2 cores; with passive (sleeping) waits it stayed at 0.13 s.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _pyslowfast_backbone(arch: str, **kwargs):
    from student.backbones import create_backbone

    return create_backbone(arch, **kwargs)


def _connect_parts() -> None:
    """Hand teachers/ the student's backbone builder (see :mod:`pipeline.io.hooks`): teachers/ and
    student/ never import each other, and every import of teachers/ runs this file first (it
    imports pipeline.io). Nothing heavy is imported here, so ``pipeline --help`` stays instant."""
    from pipeline.io.hooks import VIDEO_BACKBONES

    VIDEO_BACKBONES.setdefault("pyslowfast", _pyslowfast_backbone)


_connect_parts()
