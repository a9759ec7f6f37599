"""Logging in and out."""

from flask import Blueprint, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_user, logout_user

from portal.accounts import LOGIN_FAILED, authenticate, end_session, session_user, start_session
from portal.extensions import db, login_manager
from portal.models import normalize_email
from portal.routes import local_address

bp = Blueprint("auth", __name__)


@login_manager.user_loader
def load_user(session_token: str):
    return session_user(session_token)


@bp.record_once
def _install(state):
    # First of all before-request functions, ahead of the CSRF check: a cookie whose login has ended (logout,
    # "log out everywhere", a password change, a disabled user) is emptied, CSRF token and all, so a copy
    # taken before the logout neither logs in nor passes a form.
    state.app.before_request_funcs.setdefault(None, []).insert(0, _forget_ended_session)


def _forget_ended_session():
    if request.endpoint == "static" or "_user_id" not in session:
        return
    if not current_user.is_authenticated:
        session.clear()


@bp.route("/login", methods=("GET", "POST"))
def login():
    """Show the login form and log a user in."""
    if current_user.is_authenticated:
        return redirect(url_for("index"))
    error = None
    email = ""
    if request.method == "POST":
        email = normalize_email(request.form.get("email", ""))
        password = request.form.get("password", "")
        user = authenticate(email, password, request.remote_addr)
        if user is None:
            error = LOGIN_FAILED
            db.session.commit()  # the failure, for the throttle
        else:
            # A new cookie for a new login: nothing (no CSRF token) carries over from before it.
            session.clear()
            session.permanent = True
            start_session(user)
            db.session.commit()
            login_user(user)
            return redirect(local_address(request.args.get("next"), url_for("index")))
    status = 400 if error else 200
    return render_template("auth/login.html", error=error, email=email), status


@bp.route("/logout", methods=("POST",))
def logout():
    """Log the current user out: the session ends on the server, so copies of the cookie end with it."""
    if current_user.is_authenticated:
        end_session(current_user.session_token)
        db.session.commit()
    logout_user()
    session.clear()
    flash("You have been logged out.")
    return redirect(url_for("auth.login"))
