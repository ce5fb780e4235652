"""`pylon heatmaps --picked` reads our plain lists and the reference's picked files."""

from pylon.evaluation.heatmaps import read_picked

NIH = ["Atelectasis", "Cardiomegaly"]


def test_reference_nih_picked_csv_shows_every_boxed_class(tmp_path):
    path = tmp_path / "picked.csv"
    path.write_text(",Image Index,Atelectasis,Cardiomegaly\n0,b.png,1,0\n1,a.png,0,1\n")
    assert read_picked(path, NIH) == {"b.png": None, "a.png": None}


def test_reference_vindr_picked_csv(tmp_path):
    path = tmp_path / "v3_picked.csv"
    path.write_text("image_id,Atelectasis,Cardiomegaly,No finding\nabc,1,0,0\n")
    assert read_picked(path, NIH) == {"abc": None}


def test_plain_list_with_classes(tmp_path):
    path = tmp_path / "mine.txt"
    path.write_text("image_id,class\nx.png,Cardiomegaly\ny.png\n")
    assert read_picked(path, NIH) == {"x.png": {1}, "y.png": None}


def test_plain_list_header_after_comments_and_blank_lines(tmp_path):
    path = tmp_path / "mine.txt"
    path.write_text("# for the paper\n\nimage_id,class\nx.png,Cardiomegaly\n# more\ny.png\n")
    assert read_picked(path, NIH) == {"x.png": {1}, "y.png": None}
