"""The review app behind ``hemoembed serve``: upload cells, review predictions, neighbours and the map,
correct labels, retrain (see :mod:`hemoembed.app.engine` and :mod:`hemoembed.app.server`)."""
