"""Recipe editor: schema form, validation on the field, versions with author and diff,
activation (file + running pipeline), hostile uploads."""

from __future__ import annotations

import pytest

from station.hmi.recipe_versions import MAX_RECIPE_BYTES, RecipeEditor, RecipeRefused
from station.db.filters import HistoryFilter
from station.db.queries import HistoryQueries
from station.recipe import load_recipe
from tests.hmi.conftest import field_error, login, only, run_parts

pytestmark = pytest.mark.asyncio


def recipe_file(ctx):
    return ctx.station.recipes.directory / "demo-part.toml"


async def test_form_shows_the_recipe_and_saves_a_new_version(hmi):
    ctx, new_user = hmi
    user = await login(new_user(), "emil", "/recipes")
    assert only(user, "r-time_budget_ms").value == 5000
    assert only(user, "r-classes[0].name").value == "scratch"
    only(user, "r-time_budget_ms").value = 4000
    only(user, "r-classes[1].min_confidence").value = 0.7
    file_before = recipe_file(ctx).read_text()
    user.find(marker="save-recipe").click()
    await user.should_see(marker="version-2", retries=30)
    (v2, v1) = ctx.store.recipe_versions("demo-part")[:2]
    assert (v2.version, v2.author) == (2, "emil") and v1.version == 1
    saved = load_recipe(recipe_file(ctx), text=v2.content).recipe
    assert saved.time_budget_ms == 4000 and saved.defect_class("crack").min_confidence == 0.7
    assert saved.version == 2
    # the new version is written over the file's text: its comments and layout stay
    assert "# The plate; the conveyor around it is not inspected." in v2.content
    assert "# The station demo's product" in v2.content
    audit = [a for a in ctx.store.audit_log() if a.action == "recipe.save"][0]
    assert audit.actor == "emil" and audit.target == "demo-part v2"
    assert "-time_budget_ms = 5000" in audit.after and "+time_budget_ms = 4000" in audit.after
    # saving does not change what runs: the file and the pipeline keep v1 until activated
    assert recipe_file(ctx).read_text() == file_before
    assert ctx.station.pipeline.recipe.loaded.recipe.version == 1


@pytest.mark.parametrize("marker,value,message", [
    ("r-time_budget_ms", -5, "greater than 0"),
    ("r-classes[0].colour", "red", "#rrggbb"),
    ("r-classes[2].min_confidence", 1.5, "less than or equal to 1"),
    ("r-name", "Demo Part!", "pattern"),
    ("r-zones[0].rect", "[10, 10, 5]", ""),  # any message, on the rect field
    ("r-zones[0].rect", "[10, 10, 5", "not valid JSON"),
])
async def test_invalid_value_is_refused_on_its_field_and_changes_nothing(hmi, marker, value, message):
    ctx, new_user = hmi
    user = await login(new_user(), "emil", "/recipes")
    only(user, marker).value = value
    user.find(marker="save-recipe").click()
    await field_error(user, marker, message)
    assert [v.version for v in ctx.store.recipe_versions("demo-part")] == [1]
    assert not [a for a in ctx.store.audit_log() if a.action == "recipe.save"]


async def test_model_level_errors_are_shown(hmi):
    ctx, new_user = hmi
    user = await login(new_user(), "emil", "/recipes")
    only(user, "r-classes[1].plc_code").value = 1  # same code as scratch
    user.find(marker="save-recipe").click()
    await user.should_see("plc_code values repeat", retries=30)
    assert [v.version for v in ctx.store.recipe_versions("demo-part")] == [1]


async def test_activate_writes_the_file_and_switches_the_line(hmi):
    ctx, new_user = hmi
    user = await login(new_user(), "emil", "/recipes")
    only(user, "r-time_budget_ms").value = 3000
    user.find(marker="save-recipe").click()
    await user.should_see(marker="activate-2", retries=30)
    # activating asks first, naming what changes; cancelling changes nothing
    user.find(marker="activate-2").click()
    await user.should_see("time_budget_ms: 5000 -> 3000", retries=30)
    await user.should_see(marker="activate-unvalidated")
    user.find(marker="cancel-activate").click()
    assert load_recipe(recipe_file(ctx)).recipe.version == 1
    assert not [a for a in ctx.store.audit_log() if a.action == "recipe.activate"]
    user.find(marker="activate-2").click()
    user.find(marker="confirm-activate").click()
    await user.should_see(marker="activate-1", retries=30)
    assert load_recipe(recipe_file(ctx)).recipe.version == 2
    assert ctx.station.pipeline.recipe.loaded.recipe.time_budget_ms == 3000
    run_parts(ctx.station, 1, first_id=77)
    latest = HistoryQueries(ctx.engine).page(HistoryFilter(part_id=77), limit=1).items[0]
    assert latest["recipe_version"] == 2  # the next part ran with v2
    (entry,) = [a for a in ctx.store.audit_log() if a.action == "recipe.activate"]
    assert entry.actor == "emil" and entry.before == "v1" and entry.after.splitlines()[0] == "v2"
    assert "time_budget_ms: 5000 -> 3000" in entry.after  # what the person confirmed
    # and back to v1
    user.find(marker="activate-1").click()
    user.find(marker="confirm-activate").click()
    await user.should_see(marker="activate-2", retries=30)
    assert ctx.station.pipeline.recipe.loaded.recipe.version == 1


async def test_hostile_uploads_change_nothing(hmi):
    ctx, new_user = hmi
    editor = RecipeEditor(ctx.station, ctx.store)
    from station.hmi.recipe_versions import parse_text

    with pytest.raises(RecipeRefused, match="too large"):
        parse_text("# " + "x" * MAX_RECIPE_BYTES)
    with pytest.raises(RecipeRefused, match="TOML"):
        parse_text("name = [unclosed")
    with pytest.raises(RecipeRefused, match="plc_id"):
        parse_text('name = "x"\ntime_budget_ms = 5\n[[cameras]]\nname="top"\n[[classes]]\nname="a"\nplc_code=1\n')
    assert [v.version for v in ctx.store.recipe_versions("demo-part")] == [1]
    assert editor.running().recipe.version == 1


async def test_upload_fills_the_form_without_saving(hmi):
    ctx, new_user = hmi
    user = await login(new_user(), "emil", "/recipes")
    text = recipe_file(ctx).read_text().replace("time_budget_ms = 5000", "time_budget_ms = 2500")
    upload = only(user, "recipe-upload")
    from nicegui.elements.upload_files import SmallFileUpload

    with user:
        await upload.handle_uploads([SmallFileUpload("demo-part.toml", "text/plain", text.encode())])
    await user.should_see("loaded into the form", retries=30)
    assert only(user, "r-time_budget_ms").value == 2500
    with user:
        await upload.handle_uploads([SmallFileUpload("huge.toml", "text/plain", b"#" * (MAX_RECIPE_BYTES + 1))])
    await user.should_see("larger than 256 KiB", retries=30)
    with user:
        await upload.handle_uploads([SmallFileUpload("evil.toml", "text/plain", b'name = "<script>"\n')])
    await user.should_see("refused:", marker="upload-error", retries=30)
    assert [v.version for v in ctx.store.recipe_versions("demo-part")] == [1]


async def test_operator_cannot_edit_recipes(hmi):
    ctx, new_user = hmi
    user = await login(new_user(), "olga", "/recipes")
    await user.should_see(marker="forbidden")
    await user.should_not_see(marker="save-recipe")
