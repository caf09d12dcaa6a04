"""Classifier, normalisation, safety net, persistence, model cache, Rasa backend and CLI."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import numpy as np
import pytest

from dialogs.nlu import (
    ClassifierParser,
    IntentModel,
    emergency_trigger,
    load_examples,
    normalise,
    score,
    train,
)
from dialogs.nlu.data import DataError, load_training, parse_tsv
from tanfang.cli import main as cli_main
from tanfang.nlu import RasaParser, load_or_train
from tanfang.settings import Settings

DATA = Path(__file__).resolve().parents[3] / "nlu_data"


@pytest.fixture(scope="module")
def zh_model() -> IntentModel:
    return train(load_training(DATA / "zh"), "zh")


@pytest.fixture(scope="module")
def parser(zh_model: IntentModel) -> ClassifierParser:
    return ClassifierParser({"zh": zh_model}, threshold=0.25)


def test_normalise_full_width_punctuation_and_fillers():
    assert normalise("那个，我ＯＫ！挺好的。。", "zh") == "我ok 挺好的"
    assert normalise("呃 就是 暖气不热", "zh") == "暖气不热"
    assert normalise("嗯呐", "zh") == "嗯呐"  # a bare 嗯呐 is an answer, not a filler
    assert normalise("嗯呐 头晕", "zh") == "头晕"


@pytest.mark.parametrize("text", ["我摔倒了起不来", "救命啊", "屋里全是烟", "老伴叫不醒了", "胸口疼得厉害",
                                  "喘不上气", "着火了", "煤气中毒了"])
def test_safety_net_catches_emergencies(text):
    assert emergency_trigger(normalise(text, "zh"), "zh") is not None


@pytest.mark.parametrize("text", ["没摔倒 挺好的", "怕摔倒了起不来 不敢出门", "暖气不热", "挺好的"])
def test_safety_net_respects_negation_and_ordinary_talk(text):
    assert emergency_trigger(normalise(text, "zh"), "zh") is None


def test_safety_net_only_raises(parser: ClassifierParser):
    # A phrase the model may rank low is still an emergency; an emergency is never lowered.
    assert parser.parse("那个 我在院子里栽了一跤 起不来身", "zh").name == "emergency"
    assert parser.parse("摔倒了起不来", "zh").name == "emergency"


def test_contract_examples(parser: ClassifierParser):
    assert parser.parse("我挺好的，就是暖气不热", "zh").name == "home_hazard"
    assert parser.parse("没事，就是想孙子了", "zh").name == "lonely"
    assert parser.parse("嗯呐", "zh").name == "affirm"
    assert parser.parse("", "zh").name == "out_of_scope"


def test_low_confidence_is_out_of_scope(zh_model: IntentModel):
    strict = ClassifierParser({"zh": zh_model}, threshold=0.999)
    assert strict.parse("老寒腿有点疼", "zh").name == "out_of_scope"


def test_numpy_inference_matches_sklearn(zh_model: IntentModel):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    from dialogs.nlu.model import features

    examples = load_training(DATA / "zh")
    texts = [normalise(e.text, "zh") for e in examples]
    cfg = zh_model.config
    vec = TfidfVectorizer(analyzer=lambda s: features(s, "zh", cfg), sublinear_tf=True)
    x = vec.fit_transform(texts)
    clf = LogisticRegression(C=cfg.c, max_iter=5000, class_weight="balanced").fit(x, [e.intent for e in examples])
    probe = [normalise(t, "zh") for t in ["暖气不热", "给我闺女打个电话", "你说啥", "全新的没见过的字"]]
    expected = clf.predict_proba(vec.transform(probe))
    got = np.vstack([zh_model.proba(t) for t in probe])
    assert list(clf.classes_) == list(zh_model.classes)
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_model_round_trips_through_bytes(zh_model: IntentModel):
    blob = zh_model.to_bytes()
    again = IntentModel.from_bytes(blob)
    for text in ["暖气不热", "嗯呐", "以后别打了"]:
        np.testing.assert_allclose(again.proba(text), zh_model.proba(text), atol=1e-5)
    with pytest.raises(ValueError, match="模型"):
        IntentModel.from_bytes(b"not a model")


def test_cache_retrains_only_when_data_changes(tmp_path: Path):
    data = tmp_path / "nlu_data"
    (data / "ko").mkdir(parents=True)
    src = (DATA / "ko" / "nlu.yml").read_text(encoding="utf-8")
    (data / "ko" / "nlu.yml").write_text(src, encoding="utf-8")
    models = tmp_path / "models"
    _, trained = load_or_train("ko", data, models)
    assert trained
    _, trained = load_or_train("ko", data, models)
    assert not trained
    (data / "ko" / "test.yml").write_text(src, encoding="utf-8")  # test data is not training data
    assert not load_or_train("ko", data, models)[1]
    (data / "ko" / "nlu.yml").write_text(src.replace("    - 괜찮아요\n", "    - 괜찮아요\n    - 아주 좋아요\n", 1),
                                         encoding="utf-8")
    model, trained = load_or_train("ko", data, models)
    assert trained
    assert [p.name for p in models.glob("*.npz")] == [f"intent-ko-{model.data_hash}.npz"]


def test_bad_data_names_the_entry(tmp_path: Path):
    bad = tmp_path / "x.yml"
    bad.write_text('version: "3.1"\nnlu:\n- intent: fine\n  examples: |\n    挺好\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"nlu\[0\]（fine）第 1 行"):
        load_examples(bad)
    with pytest.raises(DataError, match="第 2 行缺少制表符"):
        parse_tsv("fine\t挺好\nno tab here")


def test_score_metrics():
    r = score(["emergency", "emergency", "fine", "fine"], ["emergency", "unwell", "emergency", "fine"])
    assert r.accuracy == 0.5 and r.emergency_recall == 0.5 and r.false_emergency_rate == 0.5
    assert r.per_intent["fine"].recall == 0.5 and r.per_intent["fine"].precision == 1.0


# -- Rasa backend against a fake Rasa server on 127.0.0.1 ------------------------------------
class _FakeRasa(BaseHTTPRequestHandler):
    replies: dict[str, tuple[str, float]] = {"嗯呐": ("affirm", 0.97), "我摔了": ("unwell", 0.6),
                                             "暖气不热": ("heating_broken", 0.9), "有点儿事": ("fine", 0.1)}
    seen: list[dict] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.seen.append({"path": self.path, **body})
        name, conf = self.replies.get(body["text"], ("out_of_scope", 0.9))
        out = {"text": body["text"], "intent": {"name": name, "confidence": conf},
               "intent_ranking": [{"name": name, "confidence": conf}], "entities": []}
        data = json.dumps(out).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def rasa_url():
    server = HTTPServer(("127.0.0.1", 0), _FakeRasa)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_rasa_backend(rasa_url: str, parser: ClassifierParser):
    rasa = RasaParser(rasa_url, threshold=0.25, fallback=parser)
    assert rasa.parse("嗯呐", "zh-CN").name == "affirm"
    assert _FakeRasa.seen[-1] == {"path": "/model/parse", "text": "嗯呐"}
    assert rasa.parse("我摔了", "zh").name == "unwell"
    assert rasa.parse("我摔倒了起不来", "zh").name == "emergency"  # safety net applies to Rasa too
    assert rasa.parse("暖气不热", "zh").name == "out_of_scope"  # not a contract intent
    assert rasa.parse("有点儿事", "zh").name == "out_of_scope"  # below threshold


def test_rasa_down_falls_back_to_local(parser: ClassifierParser):
    rasa = RasaParser("http://127.0.0.1:9", threshold=0.25, fallback=parser, timeout_s=0.5)
    assert rasa.parse("给我儿子打个电话", "zh").name == "call_family"


# -- CLI ---------------------------------------------------------------------------------------
@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TANFANG_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_cli_parse_and_evaluate_json(cli_env: Path, capsys: pytest.CaptureFixture[str]):
    assert cli_main(["nlu", "parse", "老寒腿又犯了", "--locale", "zh"]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "unwell"
    tsv = cli_env / "eval.tsv"
    tsv.write_text("unwell\t腿疼\nemergency\t救命啊\nfine\t挺好的\n", encoding="utf-8")
    assert cli_main(["nlu", "evaluate", str(tsv), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"accuracy", "macro_f1", "emergency_recall", "false_emergency_rate", "per_intent"} <= set(out)
    assert out["emergency_recall"] == 1.0


def test_cli_evaluate_rejects_unknown_labels(cli_env: Path, capsys: pytest.CaptureFixture[str]):
    tsv = cli_env / "bad.tsv"
    tsv.write_text("happy\t挺好的\n", encoding="utf-8")
    assert cli_main(["nlu", "evaluate", str(tsv)]) == 2
    assert "未知意图 happy" in capsys.readouterr().err


def test_settings_default_data_dir_is_repo_nlu_data():
    from tanfang.nlu import nlu_data_dir

    assert nlu_data_dir(Settings()) == DATA
