"""Command-line options of this extension; the webui calls ``preload(parser)`` before parsing them."""

import os


def preload(parser):
    # The webui's own package; importable here because the webui calls this function.
    from modules import paths

    # Two copies of the extension (e.g. under two folder names) would register the option twice,
    # which argparse refuses with an error that stops the webui.
    if "--sliders-dir" in getattr(parser, "_option_string_actions", {}):
        return
    parser.add_argument(
        "--sliders-dir",
        type=str,
        help="Path to directory with Concept Sliders files (slider LoRAs); default: models/sliders.",
        default=os.path.join(paths.models_path, "sliders"),
    )
