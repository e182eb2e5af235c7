"""Names a node id cannot take, because the generated module classes already have an attribute of that name.

A node"s id becomes a module name (`self.<id>`). nn.Module refuses a submodule whose name is already one of
its attributes, and a method of the class (`forward`, FSDP"s `reshard`) would hide the submodule from the
generated code. The list is nn.Module"s attributes, those `fully_shard` adds, and the methods dlspec
generates; tests/test_ir.py checks it against the installed torch, so it stays complete.
"""

MODULE_ATTRIBUTES = frozenset({
    "T_destination", "__annotations__", "__call__", "__class__", "__delattr__", "__dict__", "__dir__", "__doc__",
    "__eq__", "__format__", "__ge__", "__getattr__", "__getattribute__", "__getstate__", "__gt__", "__hash__",
    "__init__", "__init_subclass__", "__le__", "__lt__", "__module__", "__ne__", "__new__", "__reduce__",
    "__reduce_ex__", "__repr__", "__setattr__", "__setstate__", "__sizeof__", "__str__", "__subclasshook__",
    "__weakref__", "_apply", "_backward_hooks", "_backward_pre_hooks", "_buffers", "_call_impl",
    "_compiled_call_impl", "_forward_hooks", "_forward_hooks_always_called", "_forward_hooks_with_kwargs",
    "_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_get_backward_hooks", "_get_backward_pre_hooks",
    "_get_fsdp_state", "_get_name", "_init_weights", "_is_full_backward_hook", "_load_from_state_dict",
    "_load_state_dict_post_hooks", "_load_state_dict_pre_hooks", "_maybe_warn_non_full_backward_hook", "_modules",
    "_named_members", "_non_persistent_buffers_set", "_orig_cls_mro_index", "_parameters",
    "_register_load_state_dict_pre_hook", "_register_state_dict_hook", "_replicate_for_data_parallel",
    "_save_to_state_dict", "_set_unshard_async_op", "_slow_forward", "_state_dict_hooks", "_state_dict_pre_hooks",
    "_version", "_wrapped_call_impl", "add_module", "apply", "bfloat16", "buffers", "call_super_init", "children",
    "compile", "cpu", "cuda", "double", "dump_patches", "eval", "extra_repr", "float", "forward", "get_buffer",
    "get_extra_state", "get_parameter", "get_submodule", "half", "ipu", "load_state_dict", "modules", "mtia",
    "named_buffers", "named_children", "named_modules", "named_parameters", "parameters", "register_backward_hook",
    "register_buffer", "register_forward_hook", "register_forward_pre_hook", "register_full_backward_hook",
    "register_full_backward_pre_hook", "register_load_state_dict_post_hook", "register_load_state_dict_pre_hook",
    "register_module", "register_parameter", "register_state_dict_post_hook", "register_state_dict_pre_hook",
    "requires_grad_", "reset_iter_state", "reshard", "set_all_reduce_hook",
    "set_allocate_memory_from_process_group_for_comm", "set_custom_all_gather", "set_custom_reduce_scatter",
    "set_extra_state", "set_force_sum_reduction_for_comms", "set_gradient_divide_factor", "set_is_last_backward",
    "set_modules_to_backward_prefetch", "set_modules_to_forward_prefetch", "set_post_optim_event",
    "set_reduce_scatter_divide_factor", "set_reduce_scatter_max_input_buffers", "set_reduce_scatter_unused_params",
    "set_requires_all_reduce", "set_requires_gradient_sync", "set_reshard_after_backward",
    "set_reshard_after_forward", "set_separate_reduce_scatter_group", "set_submodule", "set_symm_mem_for_comm",
    "set_unshard_in_backward", "share_memory", "state_dict", "to", "to_empty", "train", "training", "type",
    "unshard", "xpu", "zero_grad"
})
