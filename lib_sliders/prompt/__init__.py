"""The text a user writes and reads: ``<slider:name:α>`` tags, the infotext fields, and the layer presets."""
