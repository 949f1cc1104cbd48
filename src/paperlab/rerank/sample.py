"""A small built-in sample written for paperlab (not taken from any data set): two queries,
eight candidate passages each, with graded labels (0-3) we assigned by hand. Used by the demo
and the CLI's smoke checks; it never needs ../shared."""

from __future__ import annotations

QUERIES: dict[str, str] = {
    "s1": "how do bees make honey",
    "s2": "what causes the seasons on earth",
}

PASSAGES: dict[str, str] = {
    "b1": "Bees collect nectar from flowers, pass it between workers who add enzymes, and store it in wax cells, fanning it with their wings until most of the water evaporates and it becomes honey.",
    "b2": "Honey never spoils: sealed jars found in old tombs were still edible after thousands of years.",
    "b3": "A honey badger is a mammal known for its thick skin and for raiding bee hives to eat larvae.",
    "b4": "Forager bees drink nectar into a honey stomach; back in the hive the enzyme invertase splits its sucrose into glucose and fructose before it is stored.",
    "b5": "The word honeymoon is said to come from the custom of drinking mead in the first month of marriage.",
    "b6": "Beekeepers wear veils and use smoke to calm the bees when they open a hive.",
    "b7": "Bumblebees make only small amounts of honey-like nectar stores, enough to feed the colony for a few days.",
    "b8": "Maple syrup is made by boiling down the sap of maple trees until it thickens.",
    "e1": "The seasons happen because Earth's axis is tilted about 23.4 degrees, so each hemisphere leans toward the Sun for part of the year and gets more direct sunlight and longer days.",
    "e2": "Earth's orbit is slightly elliptical, but the change in distance to the Sun is too small to cause the seasons.",
    "e3": "The Four Seasons is a set of violin concertos by Antonio Vivaldi.",
    "e4": "In June the northern hemisphere tilts toward the Sun: sunlight arrives at a steeper angle, concentrating its energy, which makes summer there and winter in the south.",
    "e5": "Seasonal flu vaccines are updated every year to match the strains expected to circulate.",
    "e6": "Mars also has seasons because its axis is tilted by about 25 degrees.",
    "e7": "Weather is the state of the atmosphere on a given day, while climate is the long-term average.",
    "e8": "Leaves change colour in autumn when trees stop making chlorophyll.",
}

CANDIDATES: dict[str, list[str]] = {
    "s1": ["b1", "b2", "b3", "b4", "b5", "b6", "b7", "b8"],
    "s2": ["e1", "e2", "e3", "e4", "e5", "e6", "e7", "e8"],
}

QRELS: dict[str, dict[str, int]] = {
    "s1": {"b1": 3, "b4": 3, "b7": 1, "b2": 1, "b6": 1},
    "s2": {"e1": 3, "e4": 3, "e2": 2, "e6": 1},
}
