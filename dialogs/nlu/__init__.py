"""Intent detection for check-in answers: data loading, a pure-numpy linear model trained with
scikit-learn, normalisation, the emergency safety net and evaluation. No I/O at import."""

from dialogs.nlu.data import DataError, Example, data_hash, load_examples, load_training
from dialogs.nlu.evaluate import EvaluationReport, evaluate, score
from dialogs.nlu.intents import EMERGENCY, INTENTS, OUT_OF_SCOPE, Intent, IntentParser, locale_key
from dialogs.nlu.model import IntentModel, ModelConfig, train
from dialogs.nlu.normalise import normalise
from dialogs.nlu.parser import ClassifierParser
from dialogs.nlu.safety import emergency_trigger

__all__ = [
    "EMERGENCY",
    "INTENTS",
    "OUT_OF_SCOPE",
    "ClassifierParser",
    "DataError",
    "EvaluationReport",
    "Example",
    "Intent",
    "IntentModel",
    "IntentParser",
    "ModelConfig",
    "data_hash",
    "emergency_trigger",
    "evaluate",
    "load_examples",
    "load_training",
    "locale_key",
    "normalise",
    "score",
    "train",
]
