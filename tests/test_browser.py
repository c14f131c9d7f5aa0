"""The Gradio UI in a real browser: Debian's Chromium driven by Playwright against `fastxfer serve` on loopback.

Real models: a vision model (`fastxfer vision train`, 40 shared pets photos), a text model (`fastxfer text train`,
60 short IMDB reviews, embed-logreg) and the NFL model (trained from the shared standings). Install Chromium with
`make test` (it apt-installs Debian's `chromium` when missing); without it these tests are skipped, saying why. Playwright's own
browser download is never used. Screenshots are saved under `$FASTXFER_SCREENSHOTS` (default: the test's tmp dir).
"""
import os, shutil, subprocess
from pathlib import Path

import httpx, pytest

from conftest import run_cli, shared_or_skip, PLUGIN_ENV
from test_serve import Server

# Part of the default suite (about a minute on an idle 2-core machine): `make test` installs Debian's chromium first.

CHROMIUM = shutil.which('chromium') or '/usr/bin/chromium'
ARGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
        '--disable-sync', '--no-first-run']
LOOPBACK = ('127.0.0.1', 'localhost')


def _chromium_or_skip():
    if not Path(CHROMIUM).is_file():
        reason = 'Debian chromium is not installed (apt-get install chromium; `make test` does it when run as root)'
        print('SKIP:', reason); pytest.skip(reason)
    try: import playwright.sync_api  # noqa
    except ImportError:
        print('SKIP: python playwright is not installed'); pytest.skip('python playwright is not installed')


@pytest.fixture(scope='module')
def models(real_models):
    "Real vision, text, NFL and toy (a plug-in family) model folders under one models directory."
    _chromium_or_skip()
    return real_models.parent


@pytest.fixture(scope='module')
def server(models):
    _chromium_or_skip()
    s = Server('--models', models/'models', cwd=models, env={'FASTXFER_DATA_DIR': str(models/'data'), **PLUGIN_ENV})
    yield s
    s.stop()


@pytest.fixture(scope='module')
def browser(server):
    from playwright.sync_api import sync_playwright
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    "A fresh page on the UI; every URL it requests is recorded in `page.requested`."
    ctx = browser.new_context(viewport={'width': 1200, 'height': 900})
    p = ctx.new_page()
    p.requested = []
    p.on('request', lambda r: p.requested.append(r.url))
    p.goto(server.url + '/', wait_until='load')
    p.wait_for_selector('button[role=tab]', timeout=60_000)   # the UI drawn (quicker than waiting for the network to be idle)
    yield p
    ctx.close()


def shots(tmp_path):
    d = Path(os.environ.get('FASTXFER_SCREENSHOTS') or tmp_path); d.mkdir(parents=True, exist_ok=True); return d


def top_label(page, model):
    sel = f'#out-{model} [data-testid="label-output-value"]'
    page.wait_for_selector(sel, timeout=60_000)
    return page.locator(sel).inner_text().strip()


def test_upload_a_pets_image_and_read_the_label(page, server, tmp_path):
    pets = shared_or_skip('pets/images')
    img = pets/'Bengal_101.jpg'
    page.set_input_files('#in-pets input[type=file]', str(img))
    label = top_label(page, 'pets')
    api = httpx.post(server.url + '/api/v1/predict/pets', files={'file': (img.name, img.read_bytes(), 'image/jpeg')}).json()
    assert label == api['label'] and label in ('cat', 'dog')    # the UI shows what the model says
    text = page.locator('#out-pets').inner_text()
    assert 'cat' in text and 'dog' in text and '%' in text        # every class with its probability
    page.screenshot(path=str(shots(tmp_path)/'ui_vision.png'), full_page=True)
    card = page.locator('#tab-images').inner_text()
    assert 'efficientnet_lite0' in card and 'accuracy' in card and 'created' in card


def test_click_an_example_image(page):
    page.locator('#tab-images button:has(img)').first.click()   # the examples the model folder ships
    assert top_label(page, 'pets') in ('cat', 'dog')


def test_type_a_review_in_the_text_tab(page, server, tmp_path):
    page.get_by_role('tab', name='Text').click()
    page.get_by_role('tab', name='reviews').click()   # the Text tab holds the multi-label emotions model too
    review = 'A wonderful, moving film with great acting. I loved every minute of it.'
    page.locator('#in-reviews textarea').fill(review)
    page.locator('#go-reviews').click()
    label = top_label(page, 'reviews')
    api = httpx.post(server.url + '/api/v1/predict/reviews', json={'texts': [review]}).json()
    assert label == api['label'] and label in ('positive', 'negative')
    page.screenshot(path=str(shots(tmp_path)/'ui_text.png'), full_page=True)


def test_fill_the_nfl_fields(page, server, tmp_path):
    page.get_by_role('tab', name='NFL').click()
    field = lambda f: page.locator(f'#in-nfl-{f} textarea, #in-nfl-{f} input').first
    assert [field(f).input_value() for f in ('team', 'pf', 'pa', 'pd', 'sos')] == ['', '465', '380', '', '1.5']   # typical values; the optional ones empty
    page.locator('#go-nfl').click()   # as it stands: PD left out is worked out, not taken as 0
    page.wait_for_selector('#head-nfl :text("Probability of a winning season")', timeout=60_000)
    field('team').fill('Atlanta Vipers')
    for f, v in dict(pf=465, pa=380, pd=85, sos=1.5).items(): field(f).fill(str(v))
    page.locator('#go-nfl').click()
    page.wait_for_selector('#head-nfl :text("Probability of a winning season")', timeout=60_000)
    head = page.locator('#head-nfl').inner_text()
    api = httpx.post(server.url + '/api/v1/predict/nfl', json=dict(team='Atlanta Vipers', pf=465, pa=380, pd=85, sos=1.5)).json()
    assert f"{api['probs']['winning']:.1%}" in head
    assert top_label(page, 'nfl') == api['label']
    page.screenshot(path=str(shots(tmp_path)/'ui_nfl.png'), full_page=True)


def test_a_plugin_family_gets_its_own_tab(page, server, tmp_path):
    "The toy family (tests/toy_family.py) is not in the package: its tab, form and headline come from its predictor."
    page.get_by_role('tab', name='Toy').click()
    page.locator('#in-toy-x input').first.fill('4')
    page.locator('#go-toy').click()
    page.wait_for_selector('#head-toy :text("above the threshold")', timeout=60_000)
    api = httpx.post(server.url + '/api/v1/models/toy/predict', json={'x': 4}).json()
    assert top_label(page, 'toy') == api['label'] == 'high'
    assert 'x &gt;' in page.locator('#tab-toy').inner_html() or 'x >' in page.locator('#tab-toy').inner_text()   # its card
    page.screenshot(path=str(shots(tmp_path)/'ui_toy.png'), full_page=True)


def test_fill_a_census_row_in_the_tables_tab(page, server, models, tmp_path):
    """The tabular model's form comes from its columns: a dropdown per category (its training vocabulary), a number per
    number, each filled in with a typical value (the most common, the median; not a zero); the answer shows its 90% set."""
    from fastxfer.model_folder import load_model
    typical = load_model(models/'models'/'adult').input.example()
    page.get_by_role('tab', name='Tables').click()
    shown = {c: page.locator(f'#in-adult-{c} input').first.input_value() for c in typical}
    assert {c: float(v) if isinstance(typical[c], (int, float)) else v for c, v in shown.items()} == typical, shown
    row = {'age': 52, 'workclass': 'Private', 'education': 'Masters', 'sex': 'Male', 'hours-per-week': 60}
    for c in ('age', 'hours-per-week'): page.locator(f'#in-adult-{c} input').first.fill(str(row[c]))
    for c in ('workclass', 'education', 'sex'):
        box = page.locator(f'#in-adult-{c} input').first
        box.click(); box.fill(row[c])
        page.locator(f'ul[role="listbox"] li:text-is("{row[c]}")').first.click()
    page.locator('#go-adult').click()
    page.wait_for_selector('#head-adult :text("salary:")', timeout=60_000)
    api = httpx.post(server.url + '/api/v1/models/adult/predict', json=row).json()
    assert top_label(page, 'adult') == api['label']
    head = page.locator('#head-adult').inner_text()
    assert f"{api['predictions'][0]['probability']:.1%}" in head
    assert f"90% set: {', '.join(api['predictions'][0]['set'])}" in head, head   # the conformal prediction set, as the API gives it
    page.screenshot(path=str(shots(tmp_path)/'ui_tables.png'), full_page=True)


def test_pick_a_user_and_see_recommendations_in_the_recommender_tab(page, server, tmp_path):
    "The recommender's queries are forms of their own: a user's top items, and an item's neighbours, as tables."
    page.get_by_role('tab', name='Recommender').click()
    box = page.locator('#in-ml-recommend-user input').first
    box.click(); box.fill('73')
    page.locator('ul[role="listbox"] li:text-is("73")').first.click()
    page.locator('#in-ml-recommend-n input').first.fill('3')
    page.locator('#go-ml-recommend').click()
    page.wait_for_selector('#head-ml-recommend :text("highest predicted ratings")', timeout=60_000)
    api = httpx.post(server.url + '/api/v1/models/ml/recommend', json={'user': '73', 'n': 3}).json()['result']
    table = page.locator('#out-ml-recommend').inner_text()
    assert len(api['items']) == 3 and all(it['item'] in table for it in api['items'])
    box = page.locator('#in-ml-similar-item input').first
    box.fill('unknown-film'); box.press('Enter')   # a value the dropdown does not list
    page.locator('#go-ml-similar').click()
    page.wait_for_selector('#head-ml-similar :text("cold start")', timeout=60_000)
    page.screenshot(path=str(shots(tmp_path)/'ui_recommender.png'), full_page=True)


def test_upload_a_street_image_and_see_the_overlay_in_the_segmentation_tab(page, server, tmp_path):
    "A segmentation model's tab shows the class shares, the overlay and a legend of the codes' colours."
    cam = shared_or_skip('fastai_samples/camvid_tiny')
    img = sorted((cam/'images').iterdir())[20]
    page.get_by_role('tab', name='Segmentation').click()
    page.set_input_files('#in-camvid input[type=file]', str(img))
    page.wait_for_selector('#pic-camvid img', timeout=60_000)
    api = httpx.post(server.url + '/api/v1/models/camvid/predict', files={'file': (img.name, img.read_bytes(), 'image/png')}).json()
    page.wait_for_selector(f'#legend-camvid :text("{api["label"]}")', timeout=30_000)   # the largest class is in the legend
    src = page.locator('#pic-camvid img').first.get_attribute('src')
    assert src and ('/gradio_api/file=' in src or src.startswith('data:image')), src
    page.screenshot(path=str(shots(tmp_path)/'ui_segmentation.png'), full_page=True)


def test_upload_a_satellite_chip_and_see_several_labels_with_thresholds(page, server, tmp_path):
    "A multi-label model's tab says its labels and draws every label's probability as a bar, its threshold marked."
    img = shared_or_skip('multilabel/planet')/'images'/'train_65.jpg'
    page.get_by_role('tab', name='Images').click()
    page.get_by_role('tab', name='planet').click()
    page.set_input_files('#in-planet input[type=file]', str(img))
    page.wait_for_selector('#pic-planet img', timeout=60_000)
    api = httpx.post(server.url + '/api/v1/models/planet/predict', files={'file': (img.name, img.read_bytes(), 'image/jpeg')}).json()
    labels = api['predictions'][0]['labels']
    assert len(labels) >= 2, api                                   # a clear primary-forest chip: several labels
    page.wait_for_selector('#head-planet :text("labels:")', timeout=30_000)
    head = page.locator('#head-planet').inner_text()
    assert all(l in head for l in labels), head                    # the UI says what the API says
    page.screenshot(path=str(shots(tmp_path)/'ui_multilabel.png'), full_page=True)


def test_no_request_leaves_loopback(page):
    # load every tab, then check every URL the page asked for (scripts, styles, fonts, API calls)
    for tab in ('Text', 'NFL', 'Toy', 'Segmentation', 'Images'): page.get_by_role('tab', name=tab).click()
    page.wait_for_load_state('networkidle')
    hosts = {u.split('/')[2].rsplit(':', 1)[0] for u in page.requested if u.startswith('http')}
    assert hosts and hosts <= set(LOOPBACK), f'requests left the machine: {[u for u in page.requested if "127.0.0.1" not in u]}'
    assert not [u for u in page.requested if not u.startswith(('http://127.0.0.1', 'http://localhost', 'data:', 'blob:'))]


def test_a_keyed_server_asks_for_the_key_in_the_ui(browser, models, tmp_path):
    "`--protect all`: the page has an API key box; a prediction without the key, or with a wrong one, says so; with it, it answers."
    key = 'ui-key-7c2e9b4d1a'
    (tmp_path/'models').mkdir()
    shutil.copytree(models/'models'/'toy', tmp_path/'models'/'toy')
    s = Server('--models', tmp_path/'models', '--protect', 'all', cwd=tmp_path,
               env={'FASTXFER_DATA_DIR': str(tmp_path/'data'), 'FASTXFER_API_KEYS': key, **PLUGIN_ENV})
    ctx = browser.new_context(viewport={'width': 1200, 'height': 900})
    try:
        page = ctx.new_page()
        page.goto(s.url + '/', wait_until='networkidle')
        page.locator('#in-toy-x input').first.fill('4')
        page.locator('#go-toy').click()
        page.get_by_text('This server needs an API key').first.wait_for(timeout=60_000)
        assert not page.locator('#head-toy :text("above the threshold")').count()
        page.locator('#api-key input').fill('not-the-key')
        page.locator('#go-toy').click()
        page.get_by_text('The API key is not valid').first.wait_for(timeout=60_000)
        page.screenshot(path=str(shots(tmp_path)/'ui_key_refused.png'), full_page=True)
        page.locator('#api-key input').fill(key)
        page.locator('#go-toy').click()
        page.wait_for_selector('#head-toy :text("above the threshold")', timeout=60_000)
        assert top_label(page, 'toy') == 'high'
        assert httpx.post(s.url + '/api/v1/models/toy/predict', json={'x': 4}).status_code == 401   # and the API as well
    finally:
        ctx.close(); s.stop()


def test_a_server_without_keys_has_no_key_box(server):
    ids = {c['props'].get('elem_id') for c in httpx.get(server.url + '/config').json()['components']}
    assert 'in-toy-x' in ids and 'api-key' not in ids


def test_the_tables_tab_shows_input_drift(page, server, tmp_path):
    "The Input drift fold-out reports the server's window: no drift for held-out census rows, drift once older, longer-working ones arrive."
    import pandas as pd
    from conftest import ADULT_COLUMNS
    df = pd.read_csv(shared_or_skip('fastai_samples/adult_sample/adult.csv'), skipinitialspace=True, skiprows=range(1, 3000), nrows=128)
    rows = df[[c for c in ADULT_COLUMNS if c != 'salary']].to_dict('records')
    post = lambda rs: [httpx.post(server.url + '/api/v1/models/adult/predict/batch', json={'rows': rs[i:i+64]}, timeout=60).raise_for_status()
                       for i in range(0, len(rs), 64)]
    page.get_by_role('tab', name='Tables').click()
    page.locator('#drift-box-adult').get_by_text('Input drift').click()
    post(rows)
    page.locator('#drift-adult').click()
    page.wait_for_selector('#drift-text-adult :text("No drift")', timeout=60_000)
    post([{**r, 'age': r['age'] + 25, 'hours-per-week': r['hours-per-week'] * 2} for r in rows] * 2)
    page.locator('#drift-adult').click()
    page.wait_for_selector('#drift-text-adult :text("Drifted")', timeout=60_000)
    assert 'age' in page.locator('#drift-text-adult').inner_text()
    page.screenshot(path=str(shots(tmp_path)/'ui_drift.png'), full_page=True)


def _explain(page, model):
    "Open model `model`'s Explain fold-out and click Explain."
    page.locator(f'#explain-box-{model}').get_by_text('Explain:').first.click()
    page.locator(f'#explain-{model}').click()


def test_explain_a_review_and_see_its_words_shaded(page, server, tmp_path):
    page.get_by_role('tab', name='Text').click()
    page.get_by_role('tab', name='reviews').click()   # the Text tab holds the multi-label emotions model too
    review = 'A wonderful, moving film with great acting. I loved every minute of it.'
    page.locator('#in-reviews textarea').fill(review)
    _explain(page, 'reviews')
    page.wait_for_selector('#explain-tokens-reviews :text("wonderful,")', timeout=60_000)
    api = httpx.post(server.url + '/api/v1/models/reviews/explain', json={'texts': [review]}).json()
    assert api['summary'].split()[0] in page.locator('#explain-text-reviews').inner_text()   # the same answer as the API
    assert 'minute' in page.locator('#explain-tokens-reviews').inner_text()                  # every word, shaded
    page.screenshot(path=str(shots(tmp_path)/'ui_explain_text.png'), full_page=True)


def test_explain_a_pets_image_and_see_the_heatmap(page, server, tmp_path):
    img = shared_or_skip('pets/images')/'Bengal_101.jpg'
    page.set_input_files('#in-pets input[type=file]', str(img))
    top_label(page, 'pets')
    _explain(page, 'pets')
    page.wait_for_selector('#explain-pic-pets img', timeout=60_000)
    assert "moves the model's answer" in page.locator('#explain-text-pets').inner_text()
    assert page.locator('#explain-pic-pets img').evaluate('i => i.naturalWidth') >= 256   # the heatmap over the image
    page.screenshot(path=str(shots(tmp_path)/'ui_explain_vision.png'), full_page=True)
