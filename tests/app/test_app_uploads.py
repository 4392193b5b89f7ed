"""Upload limits through HTTP: size per file (streamed, never held whole), size per request (413 as the body
passes it, with or without Content-Length), files per request, pixels; malformed requests get 4xx, never 500."""
from __future__ import annotations

import asyncio
import io

import pytest
from helpers import encoded_cell, full_decode_error
from PIL import Image

from hemoembed.app.intake import Limits

BOUNDARY = "hemoembed-test-boundary"


def multipart_body(files: list[tuple[str, bytes]], boundary: str = BOUNDARY) -> bytes:
    """A multipart/form-data body with one ``files`` part per (name, bytes), written by hand."""
    out = io.BytesIO()
    for name, data in files:
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
                  "Content-Type: application/octet-stream\r\n\r\n".encode())
        out.write(data + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue()


def chunks(body: bytes, size: int = 65536):
    """The body as a stream (sent chunked, without Content-Length)."""
    for at in range(0, len(body), size):
        yield body[at:at + size]


def test_a_file_over_the_size_limit_is_cut_off_while_it_streams_in():
    from starlette.datastructures import Headers

    from hemoembed.app.uploads import CappedParser

    big, small = b"\x89PNG" + bytes(5 * 2**20), b"small file"
    body = multipart_body([("big.png", big), ("small.png", small), ("big2.png", big)])

    async def parse():
        parser = CappedParser(Headers({"content-type": f"multipart/form-data; boundary={BOUNDARY}"}),
                              _stream(body), max_files=10, max_fields=5, cap=1001)
        form = await parser.parse()
        sizes = [(upload.filename, upload.size, await upload.read()) for _, upload in form.multi_items()]
        await form.close()
        return sizes

    sizes = asyncio.run(parse())
    assert [(name, size) for name, size, _ in sizes] == [("big.png", 1001), ("small.png", 10), ("big2.png", 1001)]
    assert sizes[0][2] == big[:1001] and sizes[1][2] == small  # the parts stay apart; nothing beyond the cap


async def _stream(body: bytes):
    for part in chunks(body, 4096):
        yield part


def test_limits_per_file_per_request_and_pixels_with_one_line_errors(client_for, cell_files):
    limits = Limits(max_file_bytes=100_000, max_pixels=1_000_000, max_files=4, max_request_bytes=400_000)
    client, engine = client_for(limits=limits)
    assert limits.request_bytes == 400_000
    good = cell_files(2)
    wide = ("wide.png", _png(Image.new("L", (2000, 600))))  # 1.2 Mpx, a few kB
    over = ("over.bmp", b"BM" + bytes(150_000))
    results = client.post("/api/predict", files=_parts([good[0], wide, over, good[1]])).json()["results"]
    assert [r["error"] is None for r in results] == [True, False, False, True]
    assert results[1]["error"] == "too many pixels (2000x600 > 1000000): possible decompression bomb"
    assert results[2]["error"] == "file is larger than the 0.0953674 MB limit"
    assert [p.name for p in (engine.data / "tmp").iterdir()] == []  # nothing of a refused file is kept

    too_many = client.post("/api/predict", files=_parts(cell_files(5, start=10)))
    assert too_many.status_code == 400 and "at most 4 files per request" in too_many.json()["detail"]

    body = multipart_body([("a.bmp", bytes(110_000))] * 4)  # 4 files of 110 kB: over the request limit only
    kind = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    declared = client.post("/api/predict", content=body, headers=kind)
    assert declared.status_code == 413 and "at most 0.381" in declared.json()["detail"]  # answered at once
    streamed = client.post("/api/predict", content=chunks(body), headers=kind)  # no Content-Length
    assert "content-length" not in {k.lower() for k in streamed.request.headers}
    assert streamed.status_code == 413 and "request too large" in streamed.json()["detail"]
    assert "\n" not in streamed.json()["detail"]
    assert len(engine.state.cells()) == 2  # the refused requests stored nothing
    again = client.post("/api/predict", files=_parts(cell_files(1, start=20))).json()["results"][0]
    assert again["error"] is None and again["label"]  # and the server goes on


def test_an_over_long_file_name_is_a_per_file_error_and_the_other_files_succeed(client_for, cell_files):
    """A 1,000-character name refuses that file alone; names of up to 255 bytes (UTF-8) are kept whole; a name
    past python-multipart's 4,224-byte header line (which Starlette cannot raise) is a one-line 400."""
    client, engine = client_for()
    files = cell_files(4)
    longest = "\u00e9" * 125 + "x.png"  # 255 bytes in UTF-8
    named = [(longest, files[0][1]), ("a" * 1000 + ".png", files[1][1]), (files[2][0], files[2][1])]
    for path in ("/api/predict", f"/api/batches/{client.post('/api/batches', json={}).json()['id']}/files"):
        response = client.post(path, files=_parts(named))
        assert response.status_code == 200, response.text
        results = response.json()["results"]
        assert [r["filename"] for r in results] == [longest, "a" * 255, files[2][0]]
        assert results[1]["id"] is None and results[1]["error"] == "file name too long (1004 bytes; at most 255)"
        assert results[1].get("label") is None
        assert results[0]["error"] is None or "identical to cell" in results[0]["error"]
        assert results[2]["error"] is None or "identical to cell" in results[2]["error"]
    assert {c["filename"] for c in engine.state.cells()} == {longest, files[2][0]}
    huge = client.post("/api/predict", files=_parts([("b" * 5_000 + ".png", files[3][1])]))
    assert huge.status_code == 400 and "\n" not in huge.json()["detail"]
    assert "file name" in huge.json()["detail"] and "4 KiB" in huge.json()["detail"], huge.json()


@pytest.mark.parametrize("headers, body", [
    ({"Content-Type": "multipart/form-data"}, b"--x\r\n"),  # no boundary
    ({"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}, b"garbage without any part"),
    ({"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
     f'--{BOUNDARY}\r\nContent-Disposition: form-data; filename="x.png"\r\n\r\nabc\r\n--{BOUNDARY}--\r\n'.encode()),
    ({"Content-Type": "application/json"}, b'{"files": []}'),
    ({"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}, multipart_body([("a.png", b"")])[:-30]),
])
def test_malformed_upload_requests_get_a_4xx_never_a_500(client_for, headers, body):
    client, engine = client_for(limits=Limits(max_files=3))
    response = client.post("/api/predict", content=body, headers=headers)
    assert 400 <= response.status_code < 500 and "\n" not in response.json()["detail"]
    batch = client.post("/api/batches", json={"name": "b"}).json()["id"]
    assert 400 <= client.post(f"/api/batches/{batch}/files", content=body, headers=headers).status_code < 500


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _parts(files):
    return [("files", (name, data, "application/octet-stream")) for name, data in files]


def test_cli_checks_the_limits_before_loading_anything(shell_cli, tmp_path):
    base = ["serve", "--store", tmp_path / "no_store", "--model", tmp_path / "no_svm", "--data", tmp_path / "d"]
    for option in ("--max-request-mb", "--max-file-mb", "--max-files"):
        result = shell_cli(*base, option, "0")  # a subprocess: a server that started would not block the tests
        assert result.exit_code == 2 and option in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "d").exists()


def test_truncated_and_corrupt_files_of_every_format_are_refused_and_nothing_is_written(client_for, cell_files):
    """Cut in half (JPEG baseline and progressive, PNG, BMP, TIFF) or with a corrupted byte that makes a
    full-size decode fail (JPEG): each gets a one-line "truncated image" / "not an image" error naming the
    decoder's reason, the good file of the same request is stored, and nothing of the bad ones is written."""
    batch_files = []
    for kind in ("jpeg", "jpeg-progressive", "png", "bmp", "tiff"):
        data = encoded_cell(kind)
        batch_files.append((f"cut.{kind}", data[: len(data) // 2]))
    jpeg = encoded_cell("jpeg")
    for at in range(len(jpeg) // 4, len(jpeg)):  # the first corrupted JPEG a full decode refuses
        corrupt = jpeg[:at] + bytes([jpeg[at] ^ 0xA5]) + jpeg[at + 1:]
        if full_decode_error(corrupt) is not None:
            batch_files.append(("corrupt.jpg", corrupt))
            break
    assert len(batch_files) == 6
    client, engine = client_for()
    batch = client.post("/api/batches", json={"name": "bad"}).json()["id"]
    good = cell_files(1)[0]
    results = client.post(f"/api/batches/{batch}/files", files=_parts([*batch_files, good])).json()["results"]
    assert results[-1]["error"] is None and results[-1]["id"] is not None
    for (name, data), result in zip(batch_files, results):
        assert result["filename"] == name and result["id"] is None and "\n" not in result["error"], result
        assert result["error"].startswith(("truncated image (", "not an image (")), result
        assert full_decode_error(data) in result["error"], result
    assert sum(r["error"] is not None and r["error"].startswith("truncated image") for r in results) >= 4
    assert [p.name for p in (engine.data / "images").rglob("*.*")] == [f"{engine.state.cells()[0]['sha256']}.png"]
    assert [p.name for p in (engine.data / "tmp").iterdir()] == []
    assert len(engine.state.cells()) == 1
    assert [(r["filename"], r["reason"]) for r in engine.state.rejects(batch)] == \
        [(name, r["error"]) for (name, _), r in zip(batch_files, results)]


def test_ids_beyond_sqlite_integers_get_a_4xx_never_a_500(client_for):
    """A cell, batch or reference id past SQLite's 64-bit integers is a client error, not an OverflowError."""
    client, _ = client_for()
    huge = str(2**63)
    for method, path in [("get", f"/api/cells/{huge}"), ("get", f"/api/cells/{huge}/image"),
                         ("get", f"/api/cells/{huge}/gradcam"), ("get", f"/api/batches/{huge}/progress"),
                         ("get", f"/api/batches/{huge}/summary"), ("get", f"/api/batches/{huge}/export.csv"),
                         ("get", f"/api/cells?batch={huge}"), ("get", f"/api/reference/{huge}/image"),
                         ("post", f"/api/batches/{huge}/files"), ("get", "/api/cells/-1")]:
        assert 400 <= getattr(client, method)(path).status_code < 500, path
    assert 400 <= client.post(f"/api/cells/{huge}/correction", json={"label": "neutrophil"}).status_code < 500
    assert client.get(f"/api/cells/{2**63 - 1}").status_code == 404  # the largest id is merely unknown
