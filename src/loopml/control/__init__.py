"""The control plane: routing state, rollout analysis, policy, retraining and the controller.

Modules are imported where used; this package file imports nothing so that the registry can use
:mod:`loopml.control.routing` without a cycle.
"""
