"""Simulated fleet of Makassar pete-pete: a numpy movement model and MQTT publishers.

``tracker_sim.model.FleetModel`` is the pure, MQTT-free model (also used to validate
headway analytics against ground truth); ``fleet sim`` publishes it over MQTT.
"""
