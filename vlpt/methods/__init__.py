"""Classification prompt methods, one module each, registered by name in ``vlpt.registry.METHODS``
(segmentation methods: ``vlpt.seg.methods``)."""
