"""The double's ``backend`` package of SD WebUI Forge (its memory manager only): see ``webui_double.forge_double``."""
