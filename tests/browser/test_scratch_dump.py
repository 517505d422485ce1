import json, time
def test_dump(world):
    t=time.time()
    out = {}
    cid = world.own_campaign
    for p in [f"/v1/campaigns/{cid}/report?by=day", f"/v1/campaigns/{cid}/report?by=country",
              f"/v1/campaigns/{cid}/report?by=creative", f"/v1/campaigns/{cid}/frequency",
              "/v1/segments", f"/v1/segments/overlap?ids={','.join(world.segment_ids)}"]:
        out[p] = world.get(p)
    import httpx
    r = httpx.get(world.url + f"/v1/campaigns/{cid}/content-effects", headers=world.headers(world.advertiser_key))
    out["ce"] = [r.status_code, r.json()]
    r = httpx.post(world.url + "/v1/forecast/reach", json={"impressions": 20000, "days": 7, "segment_ids": world.segment_ids[:1], "frequency_cap": 3}, headers=world.headers(world.advertiser_key), timeout=120)
    out["fc"] = [r.status_code, r.json()]
    r = httpx.get(world.url + "/v1/keys", headers=world.headers(world.admin_key))
    out["keys"] = r.json()
    out["campaigns"] = world.get("/v1/catalog/campaigns?limit=3", world.admin_key)
    open("/tmp/dump21.json","w").write(json.dumps(out, indent=1, default=str))
    print("took", time.time()-t, world)
