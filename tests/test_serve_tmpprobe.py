def test_x(tiny_model):
    import json
    print(tiny_model, json.load(open(tiny_model / "model.json"))["classes"], json.load(open(tiny_model / "model.json"))["packets"])
