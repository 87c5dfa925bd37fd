"""The station's HMI in the browser (NiceGUI): operator live view, history, charts, recipes, users.

``hmi.state.HmiState`` is the model the pages observe; ``hmi.app.mount(station)`` registers the
pages on NiceGUI's app, ``hmi.app.run(station, config)`` serves them in the station process.
"""
