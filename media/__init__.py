"""castnet media: a pure compute library (PyAV) that knows nothing of events, peers or money.

profiles   the ABR ladder and fitting it to a source      segmenter  input -> ~2 s MPEG-TS segments
transcoder one segment -> renditions, one thread each    hls        VOD and live HLS trees on disk
verify     a rendition against its source (verify_hls: a tree)   pipeline  input -> HLS in one call
Everything raises `media.errors.MediaError` subclasses on bad input; all calls are blocking.
"""
