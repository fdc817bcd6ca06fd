"""Independent float64 numpy references, written from the documented semantics
(``../shared/reference/groie_reference.md``), never from the code under test."""
