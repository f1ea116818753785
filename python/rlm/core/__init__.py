"""The reference library's module layout (rlm.core.rlm, rlm.core.types), so
its imports work unchanged."""
