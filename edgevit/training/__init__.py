"""Training small models here (distillation and labelled training), for honest quantization measurements."""

from edgevit.training.students import STUDENTS, Student, load_student

__all__ = ["STUDENTS", "Student", "load_student"]
