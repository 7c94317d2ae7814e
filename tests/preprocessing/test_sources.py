import json
import shutil

import pytest

from im2flow2act.preprocessing.download import DownloadConfig, DownloadError, fetch
from im2flow2act.preprocessing.sources import parse_box, resolve_inputs


def test_files_folders_manifests_and_urls(tmp_path, clip_path):
    folder = tmp_path / "videos"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(clip_path, folder / "a.mp4")
    shutil.copy(clip_path, folder / "sub" / "b.MOV")
    (folder / "notes.txt").write_text("not a video")
    csv_manifest = tmp_path / "list.csv"
    csv_manifest.write_text(
        "video,task,object_prompt,box,start,end\n"
        'videos/a.mp4,pick the cup,red cup,"10,20,30,40",0.5,2\n'
        "https://example.org/v.mp4,,,,,\n"
    )
    jsonl = tmp_path / "list.jsonl"
    jsonl.write_text(
        json.dumps({"video": str(clip_path), "task": "t", "box": [1, 2, 3, 4], "name": "mine"}) + "\n"
    )
    items, bad = resolve_inputs(
        [str(clip_path), str(folder), str(csv_manifest), str(jsonl), "http://h/x.webm"],
        task="default task",
        object_prompt="cup",
    )
    assert not bad
    assert [i.video for i in items[:3]] == [
        str(clip_path),
        str(folder / "a.mp4"),
        str(folder / "sub" / "b.MOV"),
    ]
    row = items[3]
    assert (row.video, row.task, row.object_prompt, row.box, row.start, row.end) == (
        str(tmp_path / "videos/a.mp4"),
        "pick the cup",
        "red cup",
        (10, 20, 30, 40),
        0.5,
        2.0,
    )
    assert items[4].is_url and items[4].task == "default task" and items[4].object_prompt == "cup"
    assert items[5].name == "mine" and items[5].box == (1, 2, 3, 4)
    assert items[6].is_url and items[6].origin == "http://h/x.webm"


def test_bad_inputs_are_reported_not_raised(tmp_path):
    no_video = tmp_path / "m.csv"
    no_video.write_text("file,task\nx.mp4,t\n")
    bad_row = tmp_path / "rows.jsonl"
    bad_row.write_text(
        '{"video": "a.mp4", "box": "1,2"}\n{"video": "b.mp4", "start": "soon"}\n{"video": "c.mp4"}\n'
    )
    empty = tmp_path / "empty_folder"
    empty.mkdir()
    items, bad = resolve_inputs([str(no_video), str(bad_row), str(empty), str(tmp_path / "missing.mp4")])
    reasons = {b.source: b.reason for b in bad}
    assert "no 'video' column" in reasons[str(no_video)]
    assert "four numbers" in reasons[f"{bad_row}:row 1"] and "seconds" in reasons[f"{bad_row}:row 2"]
    assert (
        "no video files" in reasons[str(empty)] and "no such file" in reasons[str(tmp_path / "missing.mp4")]
    )
    assert [i.video for i in items] == [str(tmp_path / "c.mp4")]
    assert parse_box("[1, 2, 3, 4]") == (1, 2, 3, 4)


def test_download_caches_and_reports_failures(tmp_path, clip_path, http_server, closed_port_url):
    base, www = http_server
    shutil.copy(clip_path, www / "clip.mp4")
    cache = tmp_path / "cache"
    local = fetch(f"{base}/clip.mp4", cache)
    assert local.read_bytes() == clip_path.read_bytes()
    (www / "clip.mp4").unlink()
    assert fetch(f"{base}/clip.mp4", cache) == local  # from the cache, the server no longer has it
    quick = DownloadConfig(timeout_s=2, retries=1, backoff_s=0.01)
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch(f"{base}/nothing.mp4", cache, quick)
    with pytest.raises(DownloadError, match=r"refused.*after 2 attempts"):
        fetch(closed_port_url, cache, quick)
    (www / "big.mp4").write_bytes(b"0" * 300_000)
    with pytest.raises(DownloadError, match="over the 0.1 MB cap"):
        fetch(f"{base}/big.mp4", cache, DownloadConfig(max_mb=0.1))
    assert not list(cache.glob("*.part"))
