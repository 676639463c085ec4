//! The Edit panel's widgets: brush settings, the transplant source, channel sliders, the blend
//! slider between two images, direction sliders from two folders, the composite into the photo,
//! harmonise, and recipes.

use std::path::PathBuf;

use super::AppState;
use super::edit::Slider;
use super::state::{BrushKind, default_composite};
use super::worker::Job;
use crate::composite::CompositeMode;

fn pick_folder() -> Option<PathBuf> {
    rfd::FileDialog::new().pick_folder()
}

pub fn ui(ui: &mut egui::Ui, st: &mut AppState) {
    ui.heading("Brush");
    ui.horizontal_wrapped(|ui| {
        for kind in BrushKind::ALL {
            ui.selectable_value(&mut st.session.settings.brush.kind, kind, kind.label())
                .on_hover_text(kind.tooltip());
        }
    });
    {
        let b = &mut st.session.settings.brush;
        ui.add(egui::Slider::new(&mut b.radius, 0.01..=0.5).text("size"))
            .on_hover_text("Brush radius as a fraction of the image width ([ and ] change it)");
        ui.add(egui::Slider::new(&mut b.strength, 0.0..=2.0).text("strength"))
            .on_hover_text("How strongly the brush edits: transplant weight, noise sigma, blur");
        ui.add(egui::Slider::new(&mut b.hardness, 0.0..=1.0).text("hardness"))
            .on_hover_text("1: hard edge; 0: fades from the stroke's centre to its rim");
    }

    // Source image for transplant and blend.
    let active = st.active_doc().map(|d| d.id);
    let candidates: Vec<(u64, String)> =
        st.docs.iter().filter(|d| Some(d.id) != active).map(|d| (d.id, d.name.clone())).collect();
    let current = st.source_doc().map_or("(open a second image)".to_string(), |d| d.name.clone());
    egui::ComboBox::from_label("source")
        .selected_text(current)
        .show_ui(ui, |ui| {
            for (id, name) in &candidates {
                ui.selectable_value(&mut st.edit.source, Some(*id), name);
            }
        })
        .response
        .on_hover_text("The image that transplant and blend take latents from");

    ui.separator();
    ui.heading("Channels");
    let channels = st.model.as_ref().map_or(1, |m| m.config.latent_channels);
    let mut changed = false;
    ui.horizontal(|ui| {
        ui.label("channel");
        changed |= ui
            .add(egui::DragValue::new(&mut st.edit.channel).range(0..=channels.saturating_sub(1)))
            .on_hover_text("Latent channel to edit (also picked in the inspector's channel grid)")
            .changed();
    });
    changed |= ui
        .add(egui::Slider::new(&mut st.edit.channel_factor, -3.0..=3.0).text("scale"))
        .on_hover_text("Multiply the channel everywhere (previewed live; Apply keeps it)")
        .changed();
    changed |= ui
        .add(egui::Slider::new(&mut st.edit.channel_offset, -3.0..=3.0).text("offset"))
        .on_hover_text("Add to the channel everywhere (previewed live; Apply keeps it)")
        .changed();
    if changed {
        st.set_slider_preview(Slider::Channel);
    }

    ui.separator();
    ui.heading("Blend");
    let mut changed = ui
        .add(egui::Slider::new(&mut st.edit.blend_t, 0.0..=1.0).text("towards source"))
        .on_hover_text("Interpolate the whole latent towards the source image; regenerates live")
        .changed();
    changed |= ui
        .checkbox(&mut st.edit.slerp, "spherical")
        .on_hover_text("Slerp instead of a straight line")
        .changed();
    if changed {
        st.set_slider_preview(Slider::Blend);
    }

    ui.separator();
    ui.heading("Direction");
    for (label, positive) in [("positive", true), ("negative", false)] {
        ui.horizontal(|ui| {
            let text = if positive { &mut st.edit.positive } else { &mut st.edit.negative };
            ui.label(label);
            ui.add(egui::TextEdit::singleline(text).desired_width(140.0))
                .on_hover_text("A folder of images showing the attribute (or its absence)");
            if ui.button("…").on_hover_text("Pick the folder").clicked()
                && let Some(f) = pick_folder()
            {
                *text = f.to_string_lossy().into_owned();
            }
        });
    }
    ui.horizontal(|ui| {
        if ui.button("Encode folders").on_hover_text("Encode both folders' images").clicked() {
            let size = st.size();
            for f in [st.edit.positive.clone(), st.edit.negative.clone()] {
                if f.is_empty() {
                    continue;
                }
                st.worker.send(Job::EncodeFolder { folder: PathBuf::from(f), size });
            }
        }
        let ready = st.folders.contains_key(&st.edit.positive)
            && st.folders.contains_key(&st.edit.negative);
        ui.label(if ready { "ready" } else { "not encoded" });
    });
    if ui
        .add(egui::Slider::new(&mut st.edit.direction, -3.0..=3.0).text("strength"))
        .on_hover_text("Move along mean(positive) - mean(negative)")
        .changed()
    {
        st.set_slider_preview(Slider::Direction);
    }

    ui.separator();
    ui.horizontal(|ui| {
        let has = st.edit.preview.is_some() && st.edit.stroke.is_empty();
        if ui
            .add_enabled(has, egui::Button::new("Apply"))
            .on_hover_text("Keep the previewed slider edit in the history")
            .clicked()
        {
            st.apply_preview();
        }
        if ui
            .add_enabled(has, egui::Button::new("Discard"))
            .on_hover_text("Drop the previewed slider edit")
            .clicked()
        {
            st.edit.preview = None;
            st.edit.preview_from = None;
        }
    });

    ui.separator();
    harmonise_ui(ui, st);

    ui.separator();
    composite_ui(ui, st);

    ui.separator();
    ui.heading("Recipe");
    ui.horizontal(|ui| {
        if ui.button("Save recipe…").on_hover_text("Save this image's edits as JSON").clicked()
            && let Some(p) = rfd::FileDialog::new().add_filter("recipe", &["json"]).save_file()
            && let Err(e) = st.save_recipe(&p)
        {
            st.notify(format!("{e:#}"), true);
        }
        if ui.button("Load recipe…").on_hover_text("Replace this image's edits").clicked()
            && let Some(p) = rfd::FileDialog::new().add_filter("recipe", &["json"]).pick_file()
            && let Err(e) = st.load_recipe(&p)
        {
            st.notify(format!("{e:#}"), true);
        }
    });
}

fn harmonise_ui(ui: &mut egui::Ui, st: &mut AppState) {
    ui.heading("Harmonise with the generator");
    let e = &mut st.edit;
    ui.add(egui::Slider::new(&mut e.harmonise_strength, 0.05..=1.0).text("strength"))
        .on_hover_text(
            "How far the generator re-noises the latent before bringing it back: small values \
             keep the picture and smooth the seams of edits, 1 makes a new image",
        );
    ui.add(egui::Slider::new(&mut e.harmonise_steps, 1..=100).text("steps"))
        .on_hover_text("Generator steps on the way back (more: slower, finer)");
    ui.horizontal(|ui| {
        ui.label("seed");
        ui.add(egui::DragValue::new(&mut e.harmonise_seed))
            .on_hover_text("The noise of the harmonise edit; the same seed gives the same result");
    });
    ui.checkbox(&mut e.harmonise_last_mask, "only where the last edit was").on_hover_text(
        "Use the last edit's mask (a brush stroke), so the rest stays exactly as it is",
    );
    let class = st.session.settings.generate.class.as_deref().unwrap_or("unconditional");
    ui.weak(format!("class: {class} (chosen in the Generate panel)"));
    let blocked = st.harmonise_blocked();
    let button = ui.add_enabled(blocked.is_none(), egui::Button::new("Harmonise"));
    let button = match blocked {
        Some(why) => button.on_disabled_hover_text(why),
        None => button.on_hover_text(
            "Let the generator blend the edits into a coherent image (one undoable edit, \
             computed on the worker)",
        ),
    };
    if button.clicked() {
        st.harmonise_active();
    }
    if st.edit.pending_harmonise.is_some() {
        ui.horizontal(|ui| {
            ui.spinner();
            ui.label("harmonising…");
        });
    }
}

fn composite_ui(ui: &mut egui::Ui, st: &mut AppState) {
    ui.heading("Composite into the photo");
    let c = &mut st.session.settings.composite;
    ui.horizontal(|ui| {
        for (mode, label, tip) in [
            (CompositeMode::Mask, "Mask", "Paste the decoded edit through the feathered mask"),
            (
                CompositeMode::Detail,
                "Detail",
                "Add the decoded change to the photo (keeps the photo's detail; for edits over \
                 the whole image)",
            ),
            (CompositeMode::Off, "Off", "Show and export the plain decode"),
        ] {
            ui.radio_value(&mut c.mode, mode, label).on_hover_text(tip);
        }
    });
    let on = c.mode != CompositeMode::Off;
    ui.add_enabled(on, egui::Slider::new(&mut c.feather, 0.0..=256.0).text("feather (px)"))
        .on_hover_text("Width of the transition into the photo, in the photo's pixels");
    ui.add_enabled(
        c.mode == CompositeMode::Mask,
        egui::Checkbox::new(&mut c.color_match, "colour match"),
    )
    .on_hover_text(
        "Shift the pasted colours to match the photo around the edit (any change then \
             recomposites the whole edited region)",
    );
    ui.add_enabled(
        c.mode == CompositeMode::Detail,
        egui::Slider::new(&mut c.strength, 0.0..=2.0).text("detail strength"),
    )
    .on_hover_text("How much of the decoded change detail mode adds");
    ui.add_enabled(on, egui::Slider::new(&mut c.preserve, 0.0..=0.5).text("preserve"))
        .on_hover_text(
            "Keep the photo where the decoded edit differs from the decoded original by less \
             than this (0: off)",
        );
    if ui.small_button("Defaults").on_hover_text("Mask, 32 px feather").clicked() {
        *c = default_composite();
    }
}
