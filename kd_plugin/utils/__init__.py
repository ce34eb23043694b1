from .checkpoint import (
    export_student_checkpoint,
    get_state_dict,
    load_checkpoint_file,
    register_safe_globals,
    slim_checkpoint,
    student_state_dict,
    trusted_pickle_loading,
)

__all__ = [
    'export_student_checkpoint',
    'get_state_dict',
    'load_checkpoint_file',
    'register_safe_globals',
    'slim_checkpoint',
    'student_state_dict',
    'trusted_pickle_loading',
]
