"""The Label Studio ML backend (/label-studio) through HTTP, on a real tiny encoder: shapes Label Studio
checks, predictions from data: URIs and configured roots, per-task errors, the token rule, bad configs."""
from __future__ import annotations

import base64

import pytest

CONFIG = """<View>
  <Header value="Which leukocyte?"/>
  <Image name="img" value="$image"/>
  <Choices name="cell" toName="img" choice="single">
    <Choice value="Neutrophil"/><Choice value="Lymph" predicted_values="lymphocyte"/>
    <Choice value="Monocyte" alias="MONO"/><Choice value="Eosinophil"/><Choice value="BASOPHIL"/>
    <Choice value="Artefact"/>
  </Choices>
</View>"""
STORED = {"neutrophil": "Neutrophil", "lymphocyte": "Lymph", "monocyte": "MONO", "eosinophil": "Eosinophil",
          "basophil": "BASOPHIL"}
TWO = ('<View><Image name="img" value="$image"/><Choices name="cell" toName="img">'
       '<Choice value="lymphocyte"/><Choice value="neutrophil"/></Choices></View>')


def data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def ls_predict(client, tasks, config=CONFIG, **kwargs):
    body = {"tasks": tasks, "label_config": config, "project": "1.1700000000", "model_version": "",
            "params": {"login": None, "password": None, "context": None}}
    return client.post("/label-studio/predict", json=body, **kwargs)


def test_health_setup_and_webhook_answer_as_label_studio_expects(client_for):
    client, _ = client_for()
    for path in ("/label-studio/health", "/label-studio", "/label-studio/"):
        answer = client.get(path)
        assert answer.status_code == 200 and answer.json()["status"] == "UP", path
        assert answer.json()["model_version"] == "hemoembed-v0"
    assert client.get("/health").json()["status"] == "ok"  # the stable contract is unchanged
    setup = client.post("/label-studio/setup", json={"project": "1.1700000000", "schema": CONFIG,
                                                     "hostname": "http://ls:8080", "access_token": "x"})
    assert setup.status_code == 200 and setup.json() == {"model_version": "hemoembed-v0"}
    text_only = "<View><Text name='t' value='$t'/></View>"
    bad = client.post("/label-studio/setup", json={"project": "1.1", "schema": text_only})
    assert bad.status_code == 400 and "no <Image" in bad.json()["detail"]
    hook = client.post("/label-studio/webhook", json={"action": "ANNOTATION_CREATED", "project": {"id": 1}})
    assert hook.status_code == 200 and hook.json()["status"] == "ignored"
    assert "/label-studio/predict" in client.get("/openapi.json").json()["paths"]


def test_predict_reads_data_uris_and_configured_roots_with_per_task_errors(client_for, cell_files, tmp_path):
    upload, documents = tmp_path / "ls" / "media" / "upload", tmp_path / "documents"
    (upload / "3").mkdir(parents=True)
    (documents / "imgs").mkdir(parents=True)
    cells = cell_files(3)
    (upload / "3" / "abc-cell.png").write_bytes(cells[1][1])
    (documents / "imgs" / "x 1.png").write_bytes(cells[2][1])
    (upload / "3" / "notes.png").write_bytes(b"not an image at all\n")
    (tmp_path / "secret.png").write_bytes(cells[0][1])  # a real image outside the roots
    client, engine = client_for(label_studio_roots=[upload, documents])
    tasks = [{"id": 1, "data": {"image": data_uri(cells[0][1])}},
             {"id": 2, "data": {"image": "/data/upload/3/abc-cell.png"}},
             {"id": 3, "data": {"image": "/data/local-files/?d=imgs/x%201.png"}},
             {"id": 4, "data": {"image": "http://127.0.0.1:9/cell.png"}},
             {"id": 5, "data": {"image": "/data/upload/3/missing.png"}},
             {"id": 6, "data": {"image": "/data/upload/../../../secret.png"}},
             {"id": 7, "data": {"image": "/data/local-files/?d=../secret.png"}},
             {"id": 8, "data": {"image": "/data/upload/3/notes.png"}},
             {"id": 9, "data": {"picture": "/data/upload/3/abc-cell.png"}},
             {"id": 10, "data": {"image": data_uri(cells[0][1])}},  # the same image again: the same prediction
             {"id": 11, "data": {"image": "data:image/png;base64,@@not-base64@@"}},
             {"id": 12, "data": {"image": "s3://bucket/cell.png"}}]
    answer = ls_predict(client, tasks)
    assert answer.status_code == 200
    results = answer.json()["results"]
    assert len(results) == len(tasks)
    stored = {c["filename"]: c for c in engine.state.cells(batch=engine.api_batch("Label Studio"))}
    assert set(stored) == {"label-studio-task-1", "abc-cell.png", "x 1.png"}
    for i, name in ((0, "label-studio-task-1"), (1, "abc-cell.png"), (2, "x 1.png"), (9, "label-studio-task-1")):
        cell = stored[name]
        assert results[i] == {"result": [{"from_name": "cell", "to_name": "img", "type": "choices",
                                          "value": {"choices": [STORED[cell["label"]]]}}],
                              "score": pytest.approx(cell["probabilities"][cell["label"]]),
                              "model_version": "hemoembed-v0"}, i
    errors = {t["id"]: r for t, r in zip(tasks, results) if "result" not in r}
    assert sorted(errors) == [4, 5, 6, 7, 8, 9, 11, 12]
    assert all(r["model_version"] == "hemoembed-v0" and "\n" not in r["error"] for r in errors.values())
    assert "not fetched" in errors[4]["error"] and "not fetched" in errors[12]["error"]
    assert "not found" in errors[5]["error"]
    assert "leaves" in errors[6]["error"] and "leaves" in errors[7]["error"]
    assert "not an image" in errors[8]["error"] and "data.image" in errors[9]["error"]
    assert "base64" in errors[11]["error"]

    # a config listing two classes: the more probable of those two, with its own probability as score
    restricted = ls_predict(client, tasks[:3], config=TWO).json()["results"]
    for result, name in zip(restricted, ("label-studio-task-1", "abc-cell.png", "x 1.png")):
        probabilities = stored[name]["probabilities"]
        best = max(("lymphocyte", "neutrophil"), key=probabilities.get)
        assert result["result"][0]["value"]["choices"] == [best]
        assert result["score"] == pytest.approx(probabilities[best])


def test_without_a_root_paths_are_refused_and_data_uris_still_work(client_for, cell_files):
    client, _ = client_for()
    results = ls_predict(client, [{"id": 1, "data": {"image": "/data/upload/1/a.png"}},
                                  {"id": 2, "data": {"image": data_uri(cell_files(1)[0][1])}}]).json()["results"]
    assert "--label-studio-root" in results[0]["error"] and "result" in results[1]


def test_token_rule_bearer_or_basic_auth_with_the_token_as_password(client_for):
    token = "s3cret-token-for-tests"
    client, _ = client_for(token=token)

    def basic(user: str, password: str) -> dict[str, str]:
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}

    assert client.get("/health").status_code == 200
    for path in ("/label-studio/health", "/label-studio"):
        assert client.get(path).status_code == 401
    assert ls_predict(client, []).status_code == 401
    assert client.post("/label-studio/setup", json={"schema": CONFIG}).status_code == 401
    assert client.get("/label-studio/health", headers=basic("hemoembed", "wrong")).status_code == 401
    assert client.get("/label-studio/health", headers={"Authorization": "Basic %%%"}).status_code == 401
    assert client.get("/label-studio/health", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert client.get("/label-studio/health", headers=basic("any user", token)).status_code == 200
    assert ls_predict(client, [], headers=basic("ls", token)).json() == {"results": []}
    assert client.get("/api/model", headers=basic("ls", token)).status_code == 401  # /api stays Bearer only


BILLION_LAUGHS = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
                  '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>'
                  '<View><Image name="img" value="$image"/><Header value="&lol2;"/></View>')


@pytest.mark.parametrize("config, expected", [
    ("<View><Image name='img' value='$image'/>", "not well-formed XML"),
    (BILLION_LAUGHS, "DTD or entities"),
    ('<!DOCTYPE View SYSTEM "file:///etc/passwd"><View/>', "DTD or entities"),
    ("<View>&undefined;</View>", "not well-formed XML"),
    ("", "missing or empty"),
    (None, "missing or empty"),
    (42, "missing or empty"),
    ("<View><Image name='img' value='$image'/></View>", "no <Choices"),
    ("<View><Image name='img' value='$image'/><Choices name='c' toName='img'><Choice value='cat'/></Choices></View>",
     "model's classes"),
    ("<View><Image name='img' value='https://x/y.png'/><Choices name='c' toName='img'>"
     "<Choice value='monocyte'/></Choices></View>", "task field"),
])
def test_a_bad_labelling_config_is_a_400_in_one_sentence(client_for, config, expected):
    client, _ = client_for()
    answer = ls_predict(client, [{"id": 1, "data": {"image": "data:,x"}}], config=config)
    assert answer.status_code == 400, answer.text
    detail = answer.json()["detail"]
    assert expected in detail and "\n" not in detail and "Traceback" not in detail


def test_a_malformed_predict_request_is_a_4xx_in_one_line(client_for, cell_files):
    from hemoembed.app.intake import Limits

    client, _ = client_for(limits=Limits(max_files=3, max_file_bytes=2000))
    image = cell_files(1)[0][1]
    assert len(image) > 2000
    big = ls_predict(client, [{"id": 1, "data": {"image": data_uri(image)}}]).json()["results"][0]
    assert "larger than" in big["error"]
    chunked = client.post("/label-studio/predict", content=iter([b" " * 10_000] * 3),
                          headers={"Content-Type": "application/json"})  # no Content-Length: cut off while read
    assert chunked.status_code == 413 and "request too large" in chunked.json()["detail"]
    cases = [client.post("/label-studio/predict", content=b"{not json", headers={"Content-Type": "application/json"}),
             client.post("/label-studio/predict", content=b"\xff\xfe", headers={"Content-Type": "application/json"}),
             client.post("/label-studio/predict", json=[1, 2]),
             client.post("/label-studio/predict", json={"tasks": "all"}),
             ls_predict(client, [{"data": {}}] * 4),
             ls_predict(client, ["task", 3, None])]
    statuses = [c.status_code for c in cases]
    assert statuses[:5] == [400] * 5, [c.text for c in cases]
    assert "not valid JSON" in cases[0].json()["detail"] and "too many tasks" in cases[4].json()["detail"]
    assert statuses[5] == 200 and all("'data'" in r["error"] for r in cases[5].json()["results"])
