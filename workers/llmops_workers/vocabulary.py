"""The words the bundled demo datasets and the tiny models' pretraining corpus share.

The demo tasks (`llmops_workers.sample_data`) draw their people, places, days, events and topics
from these lists, and the pretraining corpus (`llmops_workers.corpus`) talks about the same ones
(and more), so that the tiny base models know the demo's language without knowing its tasks.
Pure data. Changing a list changes the committed datasets and the tiny models' weights.
"""

from __future__ import annotations

__all__ = [
    "ACTIONS",
    "CITIES",
    "CLASSIFICATION_LABELS",
    "DAYS",
    "FIRST_NAMES",
    "JOBS",
    "LAST_NAMES",
    "REASONS",
    "TOPIC_KEYWORDS",
]

FIRST_NAMES: tuple[str, ...] = (
    "Ada", "Alan", "Maria", "John", "Grace", "Omar", "Lena", "Victor", "Nina", "Paul",
    "Sofia", "Hugo", "Clara", "Ivan", "Emma", "Leo", "Rosa", "Felix", "Alice", "Marco",
    "Julia", "Oscar", "Helen", "Tom", "Sara", "David", "Irene", "Peter", "Laura", "Noah",
    "Eva", "Samuel", "Mia", "Daniel", "Zoe", "Lucas", "Anna", "Carlos", "Elena", "Adam",
)  # fmt: skip
LAST_NAMES: tuple[str, ...] = (
    "Lovelace", "Turing", "Lopez", "Smith", "Hopper", "Khan", "Berg", "Novak", "Costa",
    "Weber", "Rossi", "Silva", "Meyer", "Petrov", "Brown", "Dubois", "Garcia", "Moreau",
    "Fischer", "Romano", "Jensen", "Walker", "Santos", "Keller", "Nakamura", "Murphy",
    "Olsen", "Schmidt", "Ferreira", "Kowalski", "Andersen", "Bianchi", "Clarke", "Duarte",
    "Evans", "Foster", "Hansen", "Larsen", "Moretti", "Nielsen",
)  # fmt: skip
CITIES: tuple[str, ...] = (
    "Porto", "London", "Paris", "Berlin", "Madrid", "Rome",
    "Vienna", "Oslo", "Dublin", "Prague", "Lisbon", "Athens",
)  # fmt: skip
JOBS: tuple[str, ...] = (
    "baker", "teacher", "doctor", "pilot", "nurse", "painter",
    "farmer", "lawyer", "writer", "chef", "dentist", "singer",
)  # fmt: skip
DAYS: tuple[str, ...] = (
    "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday",
)  # fmt: skip

# What people did, and why: the summarization task's events.
ACTIONS: tuple[str, ...] = (
    "opened a bakery", "won a chess prize", "started a company", "painted a mural",
    "planted a garden", "built a boat", "wrote a book", "sold a house", "repaired a bridge",
    "opened a museum", "adopted a dog", "launched a podcast",
)  # fmt: skip
REASONS: tuple[str, ...] = (
    "to help the neighbours", "for a local charity", "to celebrate a birthday",
    "after years of planning", "to surprise the family", "because friends asked",
    "to raise money for the school", "just for fun",
)  # fmt: skip

# The classification task's labels, and the things that belong to each topic.
CLASSIFICATION_LABELS: tuple[str, ...] = ("sports", "technology", "food", "travel")
TOPIC_KEYWORDS: dict[str, tuple[str, ...]] = {
    "sports": (
        "football match", "tennis final", "marathon", "stadium", "goalkeeper", "referee",
        "basketball team", "cycling race", "boxing match", "ski jump", "league table",
        "penalty kick",
    ),
    "technology": (
        "laptop", "software update", "robot", "smartphone", "battery", "mobile app",
        "data center", "computer chip", "web browser", "printer", "password", "router",
    ),
    "food": (
        "pasta", "soup", "bakery", "recipe", "cheese", "fresh bread", "chocolate cake",
        "salad", "pizza", "spicy curry", "fruit market", "breakfast",
    ),
    "travel": (
        "flight", "hotel", "passport", "beach resort", "train ticket", "airport", "suitcase",
        "guided tour", "road trip", "cruise ship", "hostel", "boarding pass",
    ),
}  # fmt: skip
