"""`tumor report`: the numbers of `tumor volumes`, the patient's side, the narrative's facts,
cohorts with an index, bad inputs, and (with Chromium) what a browser shows."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from tumorcli.cli.app import app
from tumorcli.metrics.regions import parse_labels
from tumorcli.report.facts import measure_session

runner = CliRunner()
SHAPE = (40, 40, 32)  # 2 mm voxels: an 80 × 80 × 64 mm head
LPS = np.array([[-2.0, 0, 0, 39.0], [0, -2.0, 0, 39.0], [0, 0, 2.0, -31.0], [0, 0, 0, 1]])
RAS = np.array([[2.0, 0, 0, -39.0], [0, 2.0, 0, -39.0], [0, 0, 2.0, -31.0], [0, 0, 0, 1]])


def world(affine: np.ndarray, shape=SHAPE) -> np.ndarray:
    """(X, Y, Z, 3) RAS mm of every voxel centre."""
    index = np.indices(shape, dtype=float).reshape(3, -1)
    return (affine[:3, :3] @ index + affine[:3, 3:]).T.reshape(*shape, 3)


def tumour_labels(affine: np.ndarray, centre_mm, core_mm: float = 6.0, et_mm: float = 9.0,
                  oedema_mm: float = 14.0, shape=SHAPE) -> np.ndarray:
    """NETC ball inside an ET shell inside SNFH, centred at world `centre_mm` (RAS)."""
    distance = np.linalg.norm(world(affine, shape) - np.asarray(centre_mm, float), axis=-1)
    labels = np.zeros(shape, np.uint8)
    labels[distance <= oedema_mm] = 2
    labels[distance <= et_mm] = 3
    labels[distance <= core_mm] = 1
    return labels


def head_image(affine: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """A T1c-like head symmetric about world x = 0: brain 100, tumour classes brighter/darker."""
    position = world(affine, labels.shape)
    head = ((position / np.array([36.0, 36.0, 28.0])) ** 2).sum(-1) <= 1
    image = np.where(head, 100.0, 0.0).astype(np.float32)
    image[labels == 1], image[labels == 2], image[labels == 3] = 40.0, 90.0, 220.0
    return image


def write_session(folder: Path, case: str, labels: np.ndarray, affine: np.ndarray) -> Path:
    session = folder / case
    session.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(head_image(affine, labels), affine), session / f"{case}-t1c.nii.gz")
    nib.save(nib.Nifti1Image(labels, affine), session / f"{case}-seg.nii.gz")
    return session


def write_patient(folder: Path, patient: str = "BraTS-GLI-00007", affine=LPS,
                  centre=(18.0, 4.0, 2.0), radii=((6, 9, 14), (4, 6, 16)),
                  days=(0, 90)) -> Path:
    """Sessions <patient>-000, -001, … (one per radii triple) and cohort.csv in `folder`."""
    for number, (core, et, oedema) in enumerate(radii):
        write_session(folder, f"{patient}-{number:03d}",
                      tumour_labels(affine, centre, core, et, oedema), affine)
    rows = [f"{patient},{n:03d},{day}" for n, day in enumerate(days[:len(radii)])]
    csv = folder / "cohort.csv"
    old = csv.read_text().splitlines()[1:] if csv.exists() else []
    csv.write_text("\n".join(["subject,session,day", *old, *rows]) + "\n")
    return folder


def report(*args: str):
    return runner.invoke(app, ["report", *map(str, args)])


def table_cells(html: str) -> dict[tuple[str, str], str]:
    """{(case, region): text} of the report's volume table."""
    cells = re.findall(r'data-region="(\w+)" data-session="([\w-]+)">([^<]*)<', html)
    return {(case, region): text for region, case, text in cells}


def embedded_facts(html: str) -> dict:
    match = re.search(r'<script type="application/json" id="tumor-facts">(.*?)</script>', html,
                      re.DOTALL)
    return json.loads(match[1])


def test_html_volumes_equal_tumor_volumes_on_the_same_labels(tmp_path):
    cohort = write_patient(tmp_path / "cohort")
    out = tmp_path / "report.html"
    made = report("-i", cohort, "--seg", cohort, "-o", out)
    assert made.exit_code == 0, made.output
    html = out.read_text()
    measured = runner.invoke(app, ["volumes", str(cohort), "--json"])
    course = runner.invoke(app, ["volumes", "--subject", str(cohort), "--json"])
    assert measured.exit_code == 0 and course.exit_code == 0
    rows = json.loads(measured.stdout)["rows"]
    cells, facts = table_cells(html), embedded_facts(html)
    by_case = {s["case"]: s for s in facts["sessions"]}
    assert len(rows) == 10 and len(cells) == 10
    for row in rows:
        case = Path(row["file"]).name.removesuffix("-seg.nii.gz")
        assert cells[(case, row["region"])] == f"{row['volume_cm3']:.2f}"
        assert by_case[case]["volumes_cm3"][row["region"]] == row["volume_cm3"]  # exactly
    for row in json.loads(course.stdout)["sessions"]:
        session = by_case[f"{row['subject']}-{row['session']}"]
        assert session["response"] == row["response"]
        assert session["day"] == row["day"]
        assert session["change_pct"]["WT"] == row["wt_change_pct"]
    assert "Volumes over days" in html and "data:image/png;base64," in html
    assert "http://" not in html and "https://" not in html  # nothing to fetch: opens offline


@pytest.mark.parametrize("affine", [LPS, RAS], ids=["LPS-stored", "RAS-stored"])
@pytest.mark.parametrize("x_mm, side", [(18.0, "right"), (-18.0, "left")])
def test_a_tumour_placed_in_the_patients_right_hemisphere_reads_right(tmp_path, affine, x_mm,
                                                                      side):
    # RAS+ world x > 0 is the patient's right (nibabel: 'R'), whichever way the voxels run
    labels = tumour_labels(affine, (x_mm, 0.0, 0.0))
    session = write_session(tmp_path, "BraTS-GLI-00003-000", labels, affine)
    background = nib.load(session / "BraTS-GLI-00003-000-t1c.nii.gz")
    from tumorcli.io.volume import Volume

    facts, _ = measure_session("BraTS-GLI-00003-000", 0, None,
                               session / "BraTS-GLI-00003-000-seg.nii.gz", parse_labels(),
                               Volume(np.asarray(background.dataobj), background.affine))
    assert facts.location.hemisphere == side
    assert not facts.location.crosses_midline
    out = tmp_path / "r.html"
    assert report("-i", session, "--seg", session / "BraTS-GLI-00003-000-seg.nii.gz", "-o",
                  out).exit_code == 0
    text = out.read_text()
    assert f"{side} hemisphere" in text
    assert ("left" if side == "right" else "right") + " hemisphere" not in text


def test_ring_solid_and_no_enhancement_diameters_and_necrosis(tmp_path):
    cases = {"ring": tumour_labels(RAS, (0, 0, 0), 6, 9, 14),
             "solid": tumour_labels(RAS, (0, 0, 0), 0, 9, 14),
             "none": tumour_labels(RAS, (0, 0, 0), 6, 0, 14)}
    measured = {}
    for name, labels in cases.items():
        path = tmp_path / f"{name}-seg.nii.gz"
        nib.save(nib.Nifti1Image(labels, RAS), path)
        measured[name] = measure_session(name, 0, None, path, parse_labels(), None)[0]
    assert {name: f.enhancement for name, f in measured.items()} == \
        {"ring": "ring", "solid": "solid", "none": "none"}
    ring = measured["ring"]
    assert ring.necrosis_pct == pytest.approx(100 * ring.volumes_cm3["NETC"] /
                                              ring.volumes_cm3["TC"])
    assert ring.oedema_reach_mm == pytest.approx(14 - 9, abs=2.1)  # SNFH to 14 mm, core to 9


@pytest.mark.parametrize("axes", [(0, 1, 2), (2, 0, 1)], ids=["LPS", "permuted"])
def test_diameters_of_a_20_12_8_mm_box_are_2_0_1_2_0_8_cm_whatever_the_axis_order(tmp_path, axes):
    linear = np.zeros((3, 3))
    for voxel_axis, (world_axis, sign) in enumerate(zip(axes, (-1, -1, 1))):
        linear[world_axis, voxel_axis] = 2.0 * sign  # voxel axis i runs along world `axis`
    affine = np.eye(4)
    affine[:3, :3] = linear
    extent_mm = np.array([20.0, 12.0, 8.0])  # right–left, anterior–posterior, head–foot
    voxels = (extent_mm / 2).astype(int)[list(axes)]  # per voxel axis
    labels = np.zeros((20, 20, 20), np.uint8)
    labels[tuple(slice(4, 4 + n) for n in voxels)] = 3
    path = tmp_path / "box-seg.nii.gz"
    nib.save(nib.Nifti1Image(labels, affine), path)
    facts = measure_session("box", 0, None, path, parse_labels(), None)[0]
    assert facts.diameters_cm["TC"] == pytest.approx([2.0, 1.2, 0.8])
    assert facts.volumes_cm3["ET"] == pytest.approx(20 * 12 * 8 / 1000)


def test_the_template_narrative_passes_its_own_fact_check(tmp_path):
    from tumorcli.report.inputs import attach_labels, find_patients
    from tumorcli.report.llm import check_text
    from tumorcli.report.study import ReportOptions, build_report

    cohort = write_patient(tmp_path)
    patient = find_patients(cohort)[0][0]
    attach_labels(patient, cohort, single=True)
    made = build_report(patient, ReportOptions())
    texts = [made.narrative.impression] + [text for _, items in made.narrative.findings
                                           for _, text in items]
    for text in texts:
        assert check_text(text, made.facts)[1] == [], text


def test_a_cohort_gives_a_report_per_patient_an_index_and_resumes(tmp_path):
    cohort = write_patient(tmp_path / "cohort", "BraTS-GLI-00011")
    write_patient(cohort, "BraTS-GLI-00012", centre=(-16.0, 0.0, 0.0), radii=((5, 8, 12),))
    out = tmp_path / "reports"
    first = report("-i", cohort, "--seg", cohort, "-o", out, "--shard", "2/2", "--json")
    assert first.exit_code == 0, first.output
    assert [r["patient"] for r in json.loads(first.stdout)["reports"]] == ["BraTS-GLI-00012"]
    every = report("-i", cohort, "--seg", cohort, "-o", out, "--json")
    statuses = {r["patient"]: r["status"] for r in json.loads(every.stdout)["reports"]}
    assert statuses == {"BraTS-GLI-00011": "done", "BraTS-GLI-00012": "skipped"}
    index = (out / "index.html").read_text()
    assert 'href="BraTS-GLI-00011.html"' in index and 'href="BraTS-GLI-00012.html"' in index
    assert "left" in index and "right" in index  # patient 12 left, patient 11 right
    assert (out / "logs" / "BraTS-GLI-00011.log").is_file()


def test_bad_inputs_are_one_line_and_exit_2(tmp_path):
    cohort = write_patient(tmp_path / "cohort")
    only_first = tmp_path / "segs"
    only_first.mkdir()
    shutil.copy(cohort / "BraTS-GLI-00007-000" / "BraTS-GLI-00007-000-seg.nii.gz", only_first)
    missing = report("-i", cohort, "--seg", only_first, "-o", tmp_path / "r.html")
    assert missing.exit_code == 2 and "BraTS-GLI-00007-001" in missing.output
    write_patient(cohort, "BraTS-GLI-00008")
    several = report("-i", cohort, "--seg", cohort, "-o", tmp_path / "r.html")
    assert several.exit_code == 2 and "2 patients" in several.output
    alone = report("-i", cohort / "BraTS-GLI-00007-000", "--seg", cohort, "-o",
                   tmp_path / "r.html", "--llm-url", "http://127.0.0.1:9/v1")
    assert alone.exit_code == 2 and "--llm-model" in alone.output
    nowhere = report("-i", tmp_path / "nothing" / "P", "-o", tmp_path / "r.html")
    assert nowhere.exit_code == 2 and "not found" in nowhere.output
    not_labels = tmp_path / "float-seg.nii.gz"
    nib.save(nib.Nifti1Image(np.full(SHAPE, 0.5, np.float32), LPS), not_labels)
    wrong = report("-i", cohort / "BraTS-GLI-00007-000", "--seg", not_labels, "-o",
                   tmp_path / "r.html")
    assert wrong.exit_code == 2 and "float-seg.nii.gz" in wrong.output
    assert not (tmp_path / "r.html").exists()


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="Chromium not installed (apt-get install "
                    "chromium)")
def test_headless_chromium_shows_the_overlays_in_the_label_colours(tmp_path):
    cohort = write_patient(tmp_path / "cohort", radii=((6, 10, 16),))
    out, shot = tmp_path / "report.html", tmp_path / "shot.png"
    assert report("-i", cohort, "--seg", cohort, "-o", out).exit_code == 0
    from tumorcli.report.html import chromium_command

    subprocess.run(chromium_command(_chromium(), f"--screenshot={shot}",
                                    "--window-size=1100,2600", out.resolve().as_uri()),
                   capture_output=True, timeout=90, check=True)
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    r, g, b = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    counts = {"NETC red": ((r - g > 80) & (r - b > 80) & (abs(g - b) < 30)).sum(),
              "SNFH green": ((g - r > 70) & (g - b > 60)).sum(),
              "ET yellow": ((r - b > 90) & (g - b > 80) & (abs(r - g) < 45)).sum()}
    # the legends' swatches hold a few hundred pixels; the labelled planes thousands
    assert all(count > 1500 for count in counts.values()), counts
    grey = (abs(r - g) < 6) & (abs(g - b) < 6) & (r > 60) & (r < 200)
    assert grey.sum() > 40000  # the head under the labels (text alone: under 10000)


def test_without_seg_the_shipped_model_segments_and_the_table_holds_its_volumes(tmp_path):
    from seg_factory import write_subject

    session = write_subject(tmp_path / "cohort", "BraTS-GLI-00021-000", seed=3)
    (session / "BraTS-GLI-00021-000-seg.nii.gz").unlink()  # nothing to peek at
    out, kept = tmp_path / "r.html", tmp_path / "segs"
    made = report("-i", session, "-o", out, "--save-seg", kept, "--json")
    assert made.exit_code == 0, made.output
    labels = kept / "BraTS-GLI-00021-000-seg.nii.gz"
    measured = runner.invoke(app, ["volumes", str(labels), "--json"])
    cells, html = table_cells(out.read_text()), out.read_text()
    assert embedded_facts(html)["labels_source"] == "segmented by resunet"
    for row in json.loads(measured.stdout)["rows"]:
        assert cells[("BraTS-GLI-00021-000", row["region"])] == f"{row['volume_cm3']:.2f}"
    assert json.loads(made.stdout)["reports"][0]["volumes_cm3"]["WT"] > 0


def test_post_and_uncertainty_maps_stand_beside_their_session(tmp_path):
    import base64
    import io

    from PIL import Image

    cohort = write_patient(tmp_path / "cohort")
    case = cohort / "BraTS-GLI-00007-001"
    labels = nib.load(case / "BraTS-GLI-00007-001-seg.nii.gz")
    post, entropy = tmp_path / "BraTS-GLI-00007-001-post.nii.gz", tmp_path / "u.nii.gz"
    t1c = nib.load(case / "BraTS-GLI-00007-001-t1c.nii.gz")
    nib.save(nib.Nifti1Image(np.asarray(t1c.dataobj) * 0.8, t1c.affine), post)
    nib.save(nib.Nifti1Image((np.asarray(labels.dataobj) > 0).astype(np.float32) * 0.7,
                             labels.affine), entropy)
    out = tmp_path / "r.html"
    made = report("-i", cohort, "--seg", cohort, "-o", out, "--post", post, "--uncertainty",
                  f"BraTS-GLI-00007-001={entropy}")
    assert made.exit_code == 0, made.output
    overlays = re.findall(r'class="overlay" alt="overlays ([\w-]+)" src="data:image/png;base64,'
                          r'([^"]+)"', out.read_text())
    heights = {case: Image.open(io.BytesIO(base64.b64decode(png))).height
               for case, png in overlays}
    assert heights["BraTS-GLI-00007-001"] > 2.5 * heights["BraTS-GLI-00007-000"]  # 3 rows vs 1
    unmatched = report("-i", cohort, "--seg", cohort, "-o", out, "--post", entropy)
    assert unmatched.exit_code == 2 and "which session" in unmatched.output
