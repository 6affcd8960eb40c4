"""Teachers: models that infer the egocentric signals (Ego-Score, Object-Score, Interaction-Map)
from frames of third-person video. One module per teacher behind the interface in ``teachers.base``.

Importing the package registers every teacher kind, so ``load_teacher`` can dispatch on a
weights file's ``kind``. Training lives apart (``ego_train``, ``objects_train``, ``handobj_train``,
``training``) and is imported only by what trains; ``convert`` holds the weights converters.
"""
from teachers.base import (
    InputSpec,
    Teacher,
    TeacherWeightsError,
    list_teachers,
    load_teacher,
    register_teacher,
    save_teacher,
    source_kind,
)
from teachers import ego, handobj, hoi100doh, objects  # noqa: E402,F401  (registers "ego", "handobj", "hoi100doh", "object")

__all__ = [
    "InputSpec",
    "Teacher",
    "TeacherWeightsError",
    "ego",
    "handobj",
    "hoi100doh",
    "list_teachers",
    "load_teacher",
    "objects",
    "register_teacher",
    "save_teacher",
    "source_kind",
]
