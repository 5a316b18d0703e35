"""Where the webui keeps its files. The fixture points ``models_path``/``data_path`` at a temp folder."""

import os

script_path = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the double's "webui root"
data_path = script_path
models_path = os.path.join(data_path, "models")
