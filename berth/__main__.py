from berth.cli import launch

launch()
