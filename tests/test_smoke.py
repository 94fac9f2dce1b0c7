def test_plans_list_empty(api):
    assert api.get("/v1/plans").json() == []
