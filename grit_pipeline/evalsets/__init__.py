"""Readers for the human-labelled grounding benchmarks, in their official file formats.

``flickr30k`` reads Flickr30k Entities (``Sentences/ID.txt``, ``Annotations/ID.xml``, split lists),
``refcoco`` reads RefCOCO, RefCOCO+ and RefCOCOg (``refs(unc).p`` / ``refs(umd).p`` and
``instances.json``); ``intervals`` holds the confidence interval every report uses. Boxes come out
normalised to the image, as ``grit_pipeline.locations.Box``.
"""
