"""The bundled Kosmos-2 trainer: synthetic data, processor, presets, data stream, training, evaluation."""
