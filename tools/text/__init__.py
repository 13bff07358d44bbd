"""The offline text stack of MICA, used only to make the text feature files (``tools/gen_text_features.py``):
CLIP's BPE tokenizer with its bundled vocabulary (``tokenizer.py``, MIT: ``LICENSE-CLIP.txt``), CLIP
ViT-B/32's text tower (``clip_text.py``), the all-MiniLM-L6-v2 sentence encoder (``minilm.py``, the offline
default) and the embedding step (``encode.py``).  Training reads the files through ``net/text_features.py``
and imports nothing from here."""
