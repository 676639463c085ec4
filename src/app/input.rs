//! Keyboard shortcuts and dropped files.

use std::path::PathBuf;

use egui::{Key, KeyboardShortcut, Modifiers};

use super::AppState;

impl AppState {
    pub(super) fn handle_shortcuts(&mut self, ctx: &egui::Context) {
        let redo_a = KeyboardShortcut::new(Modifiers::COMMAND | Modifiers::SHIFT, Key::Z);
        let redo_b = KeyboardShortcut::new(Modifiers::COMMAND, Key::Y);
        let undo = KeyboardShortcut::new(Modifiers::COMMAND, Key::Z);
        let (mut do_undo, mut do_redo) = (false, false);
        let (mut bigger, mut smaller, mut help, mut cancel) = (false, false, false, false);
        let typing = ctx.egui_wants_keyboard_input();
        ctx.input_mut(|i| {
            if i.consume_shortcut(&redo_a) || i.consume_shortcut(&redo_b) {
                do_redo = true;
            } else if i.consume_shortcut(&undo) {
                do_undo = true;
            }
            if !typing {
                for e in &i.events {
                    if let egui::Event::Text(t) = e {
                        bigger |= t == "]";
                        smaller |= t == "[";
                    }
                }
                bigger |= i.key_pressed(Key::CloseBracket);
                smaller |= i.key_pressed(Key::OpenBracket);
                help = i.key_pressed(Key::F1);
                cancel = i.key_pressed(Key::Escape);
            }
        });
        if do_undo {
            self.undo();
        }
        if do_redo {
            self.redo();
        }
        let brush = &mut self.session.settings.brush;
        if bigger {
            brush.radius = (brush.radius * 1.25).min(0.5);
        }
        if smaller {
            brush.radius = (brush.radius / 1.25).max(0.01);
        }
        if help {
            self.show_help = !self.show_help;
        }
        if cancel {
            self.worker.cancel();
        }
    }

    pub(super) fn handle_dropped_files(&mut self, ctx: &egui::Context) {
        let dropped: Vec<PathBuf> = ctx.input(|i| {
            i.raw
                .dropped_files
                .iter()
                .map(|f| f.path().to_path_buf())
                .filter(|p| !p.as_os_str().is_empty())
                .collect()
        });
        if !dropped.is_empty() {
            self.open_paths(dropped);
        }
    }
}
